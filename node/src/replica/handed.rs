//! A planned move's log (docs/replication.md, step 4): the leader of a
//! channel steps down to hand it over (it drains, or the ring gives the
//! channel to a broker that joined or came back) and sends its term's
//! configuration with the copy. The copy holds all that may have been
//! committed in that term, so the broker that takes it keeps it as its
//! replica log and may stand on the term, as if it were one of its data
//! replicas: it leads the channel replicated, with the old leader among
//! its followers, instead of serving it unreplicated.

use std::collections::HashMap;

use switchboard_cluster::{
    ownership::Snapshot,
    replication::{ReplicaConfig, ReplicaLog},
};

use super::{Entry, Epoch, Replicas};

impl Replicas {
    /// Keeps `copy`, handed over by the leader of `config`'s term as it
    /// stepped down, as this broker's log of the channel, and learns
    /// `config` to stand on. Not while this broker leads the channel, nor
    /// over a log of a later term, nor from a copy whose history has holes
    /// (a log holds contiguous offsets). Entry ages count back from
    /// `now_micros`. Returns whether the log was taken.
    pub fn seed(&self, copy: &Snapshot, config: &ReplicaConfig, now_micros: u64) -> bool {
        let Some(first) = contiguous_from(copy) else {
            tracing::debug!(channel = %copy.channel, "a handed copy with holes in its history: not kept as a log");
            return false;
        };
        let keys: HashMap<u64, &str> = copy.keys.iter().map(|(k, o)| (*o, k.as_str())).collect();
        let entries: Vec<Entry> = copy
            .history
            .iter()
            .map(|e| Entry {
                frame: e.frame.clone(),
                idempotency_key: keys.get(&e.offset).map(|k| (*k).to_owned()),
                published_micros: now_micros
                    .saturating_sub(u64::try_from(e.age.as_micros()).unwrap_or(u64::MAX)),
            })
            .collect();
        let epoch = Epoch {
            id: copy.epoch.clone(),
            created_micros: copy.created_micros,
        };
        let kept = self.with(&copy.channel, |c, _| {
            if c.leading.is_some() || config.term < c.log.term() {
                return (false, false);
            }
            c.register.learn(config);
            c.log = match copy.handed_committed {
                Some(committed) => ReplicaLog::handed_back(config.term, first, entries, committed),
                None => ReplicaLog::handed(config.term, first, entries),
            };
            c.epoch = Some(epoch);
            (true, true)
        });
        match kept {
            Ok(kept) => {
                tracing::debug!(channel = %copy.channel, term = %config.term, kept, "handed log");
                kept
            }
            Err(e) => {
                tracing::warn!(channel = %copy.channel, error = %e, "cannot keep the handed log");
                false
            }
        }
    }
}

/// The first offset of `copy`'s log: its history's first, if the history
/// runs without holes up to the copy's offset (after it, if empty).
fn contiguous_from(copy: &Snapshot) -> Option<u64> {
    let first = copy.history.first().map_or(copy.offset + 1, |e| e.offset);
    let runs = copy
        .history
        .iter()
        .zip(first..)
        .all(|(e, want)| e.offset == want);
    let ends = copy.history.last().is_none_or(|e| e.offset == copy.offset);
    (runs && ends && first >= 1).then_some(first)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use switchboard_cluster::{ownership::SnapshotEntry, replication::Term};
    use switchboard_core::ChannelName;

    use super::*;

    fn copy(offsets: &[u64], offset: u64) -> Snapshot {
        Snapshot {
            channel: ChannelName::new("chat:a").unwrap(),
            epoch: "e1".into(),
            created_micros: 1,
            offset,
            history: offsets
                .iter()
                .map(|&o| SnapshotEntry {
                    offset: o,
                    age: Duration::from_millis(5),
                    frame: Bytes::from_static(b"{}"),
                })
                .collect(),
            keys: vec![("k".into(), offsets.last().copied().unwrap_or(0))],
            term: Term(2),
            handed: None,
            handed_committed: None,
        }
    }

    #[test]
    fn a_log_is_a_history_without_holes_up_to_the_offset() {
        assert_eq!(contiguous_from(&copy(&[3, 4, 5], 5)), Some(3));
        assert_eq!(contiguous_from(&copy(&[], 7)), Some(8));
        assert_eq!(contiguous_from(&copy(&[3, 5], 5)), None);
        assert_eq!(contiguous_from(&copy(&[3, 4], 5)), None);
    }
}
