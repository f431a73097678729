//! [`SeenStore`]: the brokers this broker has seen, kept in its data
//! directory across restarts (docs/replication.md "A lost majority").
//!
//! A broker that knows no configuration of a channel takes it for new only
//! while it reaches a majority of the brokers it has seen: its voters may
//! be on the other side of a partition, going on without it. Counted only
//! since the process started, a broker restarted while cut off from the
//! others would have seen only itself, a cluster of one, and would take
//! such a channel for new. So the set is written down whenever it changes
//! (it grows as brokers are seen, and shrinks only when one drains and
//! leaves: rarely), replaced whole: written to a new file, synced, and
//! renamed over the old one, so a crash leaves one or the other.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

const FILE: &str = "brokers_seen.json";

/// The brokers seen, as last written in a data directory.
pub struct SeenStore {
    dir: PathBuf,
    saved: BTreeSet<String>,
}

impl SeenStore {
    /// Opens (or creates) the store in `dir`. A file that cannot be read
    /// as a list of names fails: forgetting brokers would undo what the
    /// store is for.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let saved = match fs::read(dir.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                let why = format!("{} is not a list of broker names: {e}", FILE);
                io::Error::new(io::ErrorKind::InvalidData, why)
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir: dir.to_owned(),
            saved,
        })
    }

    /// The brokers seen before this process started.
    pub fn remembered(&self) -> &BTreeSet<String> {
        &self.saved
    }

    /// Records `seen` if it differs from what is on disk; returns once it
    /// is there.
    pub fn save(&mut self, seen: &BTreeSet<String>) -> io::Result<()> {
        if *seen == self.saved {
            return Ok(());
        }
        let new = self.dir.join(format!("{FILE}.new"));
        {
            let mut out = File::create(&new)?;
            out.write_all(&serde_json::to_vec(seen)?)?;
            out.sync_all()?;
        }
        fs::rename(&new, self.dir.join(FILE))?;
        File::open(&self.dir)?.sync_all()?;
        self.saved = seen.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("switchboard-seen-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_brokers_seen_survive_a_restart_and_a_drained_one_is_forgotten() {
        let d = dir("restart");
        let mut store = SeenStore::open(&d).unwrap();
        assert!(store.remembered().is_empty());
        store.save(&set(&["b1", "b2", "b3"])).unwrap();
        assert_eq!(
            SeenStore::open(&d).unwrap().remembered(),
            &set(&["b1", "b2", "b3"])
        );
        // b3 drained and left.
        store.save(&set(&["b1", "b2"])).unwrap();
        assert_eq!(
            SeenStore::open(&d).unwrap().remembered(),
            &set(&["b1", "b2"])
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_file_fails_the_open_instead_of_forgetting() {
        let d = dir("damaged");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(FILE), b"[\"b1\", \"b2").unwrap();
        let e = SeenStore::open(&d).err().expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(FILE), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }
}
