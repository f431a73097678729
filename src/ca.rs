//! `switchboard ca`: a cluster CA in a directory, and certificates issued
//! by it for each node (docs/security.md).

use std::path::PathBuf;

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
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
