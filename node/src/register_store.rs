//! [`RegisterStore`]: the durable part of this broker's replication
//! registers (docs/replication.md: a voter that forgot a promise could vote
//! twice for one term), in one append-only file.
//!
//! Each change is one JSON line (`channel`, `promised`, `promised_to`,
//! `config`) written and synced before [`RegisterStore::save`] returns, so
//! before the vote it records leaves the broker. Registers change only on
//! configuration changes, never per publication, so a sync per change is
//! cheap. A retired channel's register is forgotten with a line of its
//! own (`channel`, `forgotten`), which also raises the channel's floor
//! ([`Floors`]: the highest term of any register forgotten in its bucket),
//! at or below which a register made afresh never votes
//! ([`Register::above`]). Opening reads every line (the last per channel
//! wins), ignores a torn last line (a crash mid-write: that vote never
//! left), and rewrites the file with the floors and one line per channel;
//! so does a store whose file has grown to twice its live lines (plus
//! [`SLACK`]), which bounds it under channels that come and go.

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

use crate::floors::Floors;

const FILE: &str = "registers.jsonl";

/// Lines a store's file may hold beyond twice its live ones before it is
/// rewritten.
const SLACK: usize = 1024;

/// The durable registers, by channel.
pub struct RegisterStore {
    dir: PathBuf,
    file: File,
    saved: HashMap<ChannelName, Value>,
    /// The highest term of any register forgotten, by bucket.
    floors: Floors,
    /// Lines in the file.
    lines: usize,
}

impl RegisterStore {
    /// Opens (or creates) the store in `dir`, compacting it.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let mut saved = HashMap::new();
        let mut floors = Floors::default();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                // A torn line can only be the last one: its vote never left.
                let Ok(record) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                floors.read(&record);
                let Some(channel) = record["channel"]
                    .as_str()
                    .and_then(|c| ChannelName::new(c).ok())
                else {
                    continue;
                };
                if let Some(term) = record["forgotten"].as_u64() {
                    floors.raise(&channel, Term(term));
                    saved.remove(&channel);
                } else {
                    saved.insert(channel, record);
                }
            }
        }
        let file = rewrite(dir, &saved, &floors)?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            lines: saved.len() + 1,
            saved,
            floors,
        })
    }

    /// `channel`'s floor: the highest term of any register forgotten here
    /// in its bucket.
    pub fn floor(&self, channel: &ChannelName) -> Term {
        self.floors.of(channel)
    }

    /// Forgets `channel`'s register, whose promise was `promised`, and
    /// raises its floor to it; returns once that is on disk.
    pub fn forget(&mut self, channel: &ChannelName, promised: Term) -> io::Result<()> {
        let record = json!({ "channel": channel.as_str(), "forgotten": promised.0 });
        self.append(&record)?;
        self.saved.remove(channel);
        self.floors.raise(channel, promised);
        self.compact_if_grown()
    }

    fn append(&mut self, record: &Value) -> io::Result<()> {
        writeln!(self.file, "{record}")?;
        self.file.sync_data()?;
        self.lines += 1;
        Ok(())
    }

    fn compact_if_grown(&mut self) -> io::Result<()> {
        if self.lines > 2 * self.saved.len() + SLACK {
            self.file = rewrite(&self.dir, &self.saved, &self.floors)?;
            self.lines = self.saved.len() + 1;
        }
        Ok(())
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
        self.append(&record)?;
        self.saved.insert(channel.clone(), record);
        self.compact_if_grown()
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

/// Writes the floors and one line per live register to a new file, moves
/// it over the store's, and opens it to append.
fn rewrite(dir: &Path, saved: &HashMap<ChannelName, Value>, floors: &Floors) -> io::Result<File> {
    let path = dir.join(FILE);
    let compacted = dir.join(format!("{FILE}.new"));
    {
        let mut out = io::BufWriter::new(File::create(&compacted)?);
        writeln!(out, "{}", floors.to_record())?;
        for record in saved.values() {
            writeln!(out, "{record}")?;
        }
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()?;
    }
    fs::rename(&compacted, &path)?;
    File::open(dir)?.sync_all()?;
    OpenOptions::new().append(true).open(&path)
}

fn config_json(c: &ReplicaConfig) -> Value {
    json!({
        "term": c.term.0,
        "leader": c.leader.as_str(),
        "followers": c.followers.iter().map(BrokerName::as_str).collect::<Vec<_>>(),
        "witness": c.witness.as_ref().map(BrokerName::as_str),
        "holders": c.holders.iter().map(BrokerName::as_str).collect::<Vec<_>>(),
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
        // Absent in registers saved before session 18.
        holders: match v.get("holders") {
            None => Vec::new(),
            Some(h) => h
                .as_array()?
                .iter()
                .map(|b| b.as_str().map(BrokerName::from))
                .collect::<Option<_>>()?,
        },
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
            holders: vec![],
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
        assert_eq!(
            lines, 2,
            "the floor and one line per channel after compaction"
        );
        assert_eq!(store.channels().count(), 1);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_forgotten_register_stays_forgotten_and_raises_the_floor() {
        let d = dir("forget");
        {
            let mut store = RegisterStore::open(&d).unwrap();
            let mut r = Register::new(LEASE);
            r.on_commit(&config(4));
            store.save(&ch("chat:a"), &r).unwrap();
            store.save(&ch("chat:b"), &r).unwrap();
            store.forget(&ch("chat:a"), Term(4)).unwrap();
            assert_eq!(store.floor(&ch("chat:a")), Term(4));
        }
        let store = RegisterStore::open(&d).unwrap();
        assert_eq!(store.floor(&ch("chat:a")), Term(4));
        assert_eq!(store.floor(&ch("chat:b")), Term::ZERO, "another bucket");
        assert!(
            store
                .restore(&ch("chat:a"), LEASE, Instant::now())
                .is_none()
        );
        assert!(
            store
                .restore(&ch("chat:b"), LEASE, Instant::now())
                .is_some()
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_of_channels_that_came_and_went_is_rewritten_as_it_grows() {
        let d = dir("grown");
        let mut store = RegisterStore::open(&d).unwrap();
        let mut r = Register::new(LEASE);
        r.on_commit(&config(2));
        // Two lines each: past SLACK once.
        for i in 0..SLACK / 2 + 8 {
            let c = ch(&format!("chat:{i}"));
            store.save(&c, &r).unwrap();
            store.forget(&c, Term(2)).unwrap();
        }
        let lines = fs::read_to_string(d.join(FILE)).unwrap().lines().count();
        assert!(lines <= SLACK + 1, "{lines} lines for no live register");
        drop(store);
        let store = RegisterStore::open(&d).unwrap();
        assert_eq!(store.channels().count(), 0);
        assert_eq!(store.floor(&ch("chat:0")), Term(2));
        let _ = fs::remove_dir_all(&d);
    }
}
