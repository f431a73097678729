//! `switchboard ca`: a cluster CA in a directory, and certificates issued
//! by it for each node (docs/security.md).

use std::path::PathBuf;

use anyhow::Context;

use clap::{Subcommand, ValueEnum};
use switchboard_cluster::{
    membership::Role,
    tls::authority::{self, DEFAULT_DAYS},
};

#[derive(Subcommand)]
pub(crate) enum CaCommand {
    /// Write a new CA (DIR/ca.crt, DIR/ca.key) and gossip key (DIR/gossip.key).
    Init {
        /// Where to write the files.
        #[arg(long)]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Write DIR/NAME.crt and DIR/NAME.key, signed by the CA in DIR.
    Issue {
        /// The directory holding ca.crt and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// The node's --name (a DNS label: lowercase letters, digits, '-').
        #[arg(long)]
        name: String,
        /// What the node is.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Another DNS name or IP address for the certificate (repeat).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = DEFAULT_DAYS)]
        days: u32,
    },
    /// Credentials for a whole cluster, made once and kept: the CA and
    /// gossip key in --ca-dir (made if missing), and for each node a folder
    /// OUT/NAME with ca.crt, gossip.key, NAME.crt and NAME.key (issued if
    /// missing). docker-compose.yml's one-shot `credentials` service runs it.
    Setup {
        /// Where the CA and the gossip key live (mounted nowhere else).
        #[arg(long)]
        ca_dir: PathBuf,
        /// Where each node's folder goes.
        #[arg(long)]
        out: PathBuf,
        /// Broker names (repeat, or separate with commas).
        #[arg(long = "broker", value_delimiter = ',')]
        brokers: Vec<String>,
        /// Gateway names (repeat, or separate with commas).
        #[arg(long = "gateway", value_delimiter = ',')]
        gateways: Vec<String>,
        /// Hand each node's folder and files to this user, UID:GID (the
        /// image's user is 65532:65532); needs root.
        #[arg(long, value_parser = parse_owner)]
        owner: Option<(u32, u32)>,
        /// Days a node certificate is valid.
        #[arg(long, default_value_t = DEFAULT_DAYS)]
        days: u32,
    },
}

fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = s.split_once(':').ok_or("expected UID:GID")?;
    let id = |v: &str| v.parse::<u32>().map_err(|e| format!("{v:?}: {e}"));
    Ok((id(uid)?, id(gid)?))
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RoleArg {
    Broker,
    Gateway,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Broker => Role::Broker,
            RoleArg::Gateway => Role::Gateway,
        }
    }
}

pub(crate) fn run(command: CaCommand) -> anyhow::Result<()> {
    let written = match command {
        CaCommand::Init { dir, force } => authority::init_dir(&dir, force)?,
        CaCommand::Issue {
            dir,
            name,
            role,
            sans,
            days,
        } => authority::issue_into_dir(&dir, &name, role.into(), &sans, days)?.to_vec(),
        CaCommand::Setup {
            ca_dir,
            out,
            brokers,
            gateways,
            owner,
            days,
        } => {
            let nodes: Vec<(String, Role)> = (brokers.into_iter().map(|n| (n, Role::Broker)))
                .chain(gateways.into_iter().map(|n| (n, Role::Gateway)))
                .collect();
            let written = authority::setup(&ca_dir, &out, &nodes, days)?;
            if let Some((uid, gid)) = owner {
                let folders = nodes.iter().map(|(name, _)| out.join(name));
                for path in folders.chain(written.iter().filter(|p| p.starts_with(&out)).cloned()) {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .with_context(|| format!("handing {} to {uid}:{gid}", path.display()))?;
                }
            }
            written
        }
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
