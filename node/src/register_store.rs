//! [`RegisterStore`]: the durable part of this broker's replication
//! registers (docs/replication.md: a voter that forgot a promise could vote
//! twice for one term), in one append-only file.
//!
//! Each change is one JSON line (`channel`, `promised`, `promised_to`,
//! `config`) written and synced before [`RegisterStore::save`] returns, so
//! before the vote it records leaves the broker. Registers change only on
//! configuration changes, never per publication, so a sync per change is
//! cheap. Opening reads every line (the last per channel wins), ignores a
//! torn last line (a crash mid-write: that vote never left), and rewrites
//! the file with one line per channel.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchboard_cluster::replication::{Register, ReplicaConfig, Term};
use switchboard_core::{BrokerName, ChannelName};

const FILE: &str = "registers.jsonl";

/// The durable registers, by channel.
pub struct RegisterStore {
    dir: PathBuf,
    file: File,
    saved: HashMap<ChannelName, Value>,
}

impl RegisterStore {
    /// Opens (or creates) the store in `dir`, compacting it.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let mut saved = HashMap::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                // A torn line can only be the last one: its vote never left.
                let Ok(record) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(channel) = record["channel"]
                    .as_str()
                    .and_then(|c| ChannelName::new(c).ok())
                {
                    saved.insert(channel, record);
                }
            }
        }
        let compacted = dir.join(format!("{FILE}.new"));
        {
            let mut out = File::create(&compacted)?;
            for record in saved.values() {
                writeln!(out, "{record}")?;
            }
            out.sync_all()?;
        }
        fs::rename(&compacted, &path)?;
        File::open(dir)?.sync_all()?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            saved,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records `register`'s durable part for `channel`; returns once it is
    /// on disk.
    pub fn save(&mut self, channel: &ChannelName, register: &Register) -> io::Result<()> {
        let record = json!({
            "channel": channel.as_str(),
            "promised": register.promised().0,
            "promised_to": register.promised_to().map(BrokerName::as_str),
            "config": register.config().map(config_json),
        });
        writeln!(self.file, "{record}")?;
        self.file.sync_data()?;
        self.saved.insert(channel.clone(), record);
        Ok(())
    }

    /// `channel`'s register as saved, rebuilt at `now` (no vote for one
    /// lease period); `None` if it never voted.
    pub fn restore(
        &self,
        channel: &ChannelName,
        lease: Duration,
        now: Instant,
    ) -> Option<Register> {
        let record = self.saved.get(channel)?;
        let promised = Term(record["promised"].as_u64()?);
        let promised_to = record["promised_to"].as_str().map(BrokerName::from);
        let config = match &record["config"] {
            Value::Null => None,
            c => Some(config_from(c)?),
        };
        Some(Register::recovered(
            lease,
            promised,
            promised_to,
            config,
            now,
        ))
    }

    /// Channels with a saved register.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.saved.keys()
    }
}

fn config_json(c: &ReplicaConfig) -> Value {
    json!({
        "term": c.term.0,
        "leader": c.leader.as_str(),
        "followers": c.followers.iter().map(BrokerName::as_str).collect::<Vec<_>>(),
        "witness": c.witness.as_ref().map(BrokerName::as_str),
    })
}

fn config_from(v: &Value) -> Option<ReplicaConfig> {
    Some(ReplicaConfig {
        term: Term(v["term"].as_u64()?),
        leader: BrokerName::from(v["leader"].as_str()?),
        followers: v["followers"]
            .as_array()?
            .iter()
            .map(|f| f.as_str().map(BrokerName::from))
            .collect::<Option<_>>()?,
        witness: v["witness"].as_str().map(BrokerName::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(800);

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "switchboard-registers-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn ch(n: &str) -> ChannelName {
        ChannelName::new(n).unwrap()
    }

    fn config(term: u64) -> ReplicaConfig {
        ReplicaConfig {
            term: Term(term),
            leader: "b1".into(),
            followers: vec!["b2".into()],
            witness: Some("b3".into()),
        }
    }

    #[test]
    fn a_promise_survives_a_restart_and_blocks_votes_for_a_lease() {
        let d = dir("restart");
        let now = Instant::now();
        {
            let mut store = RegisterStore::open(&d).unwrap();
            let mut r = Register::new(LEASE);
            r.on_commit(&config(1));
            store.save(&ch("chat:a"), &r).unwrap();
            let reply = r.on_prepare(now + LEASE, &"b2".into(), Term(2), Some(5));
            assert!(matches!(
                reply,
                switchboard_cluster::replication::PrepareReply::Promised { .. }
            ));
            store.save(&ch("chat:a"), &r).unwrap();
        }
        let store = RegisterStore::open(&d).unwrap();
        let later = Instant::now();
        let mut r = store.restore(&ch("chat:a"), LEASE, later).unwrap();
        assert_eq!(r.promised(), Term(2));
        assert_eq!(r.promised_to().map(BrokerName::as_str), Some("b2"));
        assert_eq!(r.config(), Some(&config(1)));
        // Another candidate for the promised term is refused, also after
        // the lease period a restart imposes.
        let reply = r.on_prepare(later + LEASE * 2, &"b3".into(), Term(2), None);
        assert!(matches!(
            reply,
            switchboard_cluster::replication::PrepareReply::Refused { .. }
        ));
        assert!(store.restore(&ch("chat:b"), LEASE, later).is_none());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_the_file_is_compacted() {
        let d = dir("torn");
        {
            let mut store = RegisterStore::open(&d).unwrap();
            let mut r = Register::new(LEASE);
            for term in 1..=3 {
                r.on_commit(&config(term));
                store.save(&ch("chat:a"), &r).unwrap();
            }
        }
        let path = d.join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        write!(f, "{{\"channel\":\"chat:a\",\"prom").unwrap();
        drop(f);
        let store = RegisterStore::open(&d).unwrap();
        let r = store.restore(&ch("chat:a"), LEASE, Instant::now()).unwrap();
        assert_eq!(r.config().map(|c| c.term), Some(Term(3)));
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 1, "one line per channel after compaction");
        assert_eq!(store.channels().count(), 1);
        let _ = fs::remove_dir_all(&d);
    }
}
