//! A candidacy of this broker being decided: while it is, the broker's
//! log of the channel may yet lead the term it stands for, so it is not
//! handed away ([`Replicas::hand_replica`]).

use switchboard_cluster::replication::Term;
use switchboard_core::{BrokerName, ChannelName};

use super::{ReplicaError, Replicas};

/// Held for as long as a candidacy of this broker for `channel` runs;
/// counted in the channel's state under the same lock a hand-over checks.
pub struct Standing<'a> {
    replicas: &'a Replicas,
    channel: ChannelName,
}

impl Replicas {
    /// Marks `channel` stood for here until the returned guard is dropped.
    pub fn standing(&self, channel: &ChannelName) -> Result<Standing<'_>, ReplicaError> {
        self.with(channel, |c, _| {
            c.standing += 1;
            ((), false)
        })?;
        Ok(Standing {
            replicas: self,
            channel: channel.clone(),
        })
    }

    /// This broker's candidacy for `channel` proposes its configuration of
    /// `term` to `voters` (its base's): remembered before its own register
    /// accepts it, so that if it never leads it, it stands on it only with
    /// a majority of those voters too (`Candidacy::new`).
    pub fn proposing(
        &self,
        channel: &ChannelName,
        term: Term,
        voters: Vec<BrokerName>,
    ) -> Result<(), ReplicaError> {
        self.with(channel, |c, _| {
            c.log.proposed(term, voters);
            ((), false)
        })
    }

    /// Whether a candidacy of this broker for `channel` is being decided.
    pub fn is_standing(&self, channel: &ChannelName) -> bool {
        self.channels
            .lock()
            .get(channel)
            .is_some_and(|c| c.standing > 0)
    }
}

impl Drop for Standing<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.replicas.channels.lock().get_mut(&self.channel) {
            c.standing = c.standing.saturating_sub(1);
        }
    }
}
