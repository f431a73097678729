//! A presence channel's members as one Pusher connection sees them.
//!
//! The owner keeps presence per connection (socket id) and sends join and
//! leave per connection; Pusher clients see users: `member_added` when a
//! user's first connection arrives, `member_removed` when its last one
//! goes. Each connection keeps this roster from the member list it got on
//! subscribing plus the events after it. Keyed by socket id, so that an
//! event the list already reflected changes nothing.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;

/// What a join or leave means for the connection's client.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Added(String),
    Removed(String),
}

#[derive(Debug, Default)]
pub struct Roster {
    /// Socket id to user id.
    sockets: HashMap<String, String>,
    /// User id to its number of sockets and its `user_info`.
    users: HashMap<String, (usize, Option<Box<RawValue>>)>,
}

impl Roster {
    /// Adds a connection of `user_id`; `Some` when the user is new.
    pub fn join(
        &mut self,
        socket_id: &str,
        user_id: &str,
        user_info: Option<Box<RawValue>>,
    ) -> Option<Change> {
        if self.sockets.contains_key(socket_id) {
            return None;
        }
        self.sockets
            .insert(socket_id.to_owned(), user_id.to_owned());
        let entry = self
            .users
            .entry(user_id.to_owned())
            .or_insert((0, user_info));
        entry.0 += 1;
        (entry.0 == 1).then(|| Change::Added(user_id.to_owned()))
    }

    /// Removes a connection; `Some` when it was its user's last.
    pub fn leave(&mut self, socket_id: &str) -> Option<Change> {
        let user_id = self.sockets.remove(socket_id)?;
        let entry = self.users.get_mut(&user_id)?;
        entry.0 -= 1;
        if entry.0 > 0 {
            return None;
        }
        self.users.remove(&user_id);
        Some(Change::Removed(user_id))
    }

    pub fn user_info(&self, user_id: &str) -> Option<&RawValue> {
        self.users.get(user_id).and_then(|(_, i)| i.as_deref())
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The `data` of a presence `subscription_succeeded`, as JSON text:
    /// `{"presence":{"ids":[…],"hash":{id:info},"count":n}}`.
    pub fn subscription_data(&self) -> String {
        let mut ids: Vec<&str> = self.users.keys().map(String::as_str).collect();
        ids.sort_unstable();
        let null = RawValue::NULL;
        let hash: std::collections::BTreeMap<&str, &RawValue> = ids
            .iter()
            .map(|id| (*id, self.user_info(id).unwrap_or(null)))
            .collect();
        #[derive(Serialize)]
        struct Members<'a> {
            ids: &'a [&'a str],
            hash: std::collections::BTreeMap<&'a str, &'a RawValue>,
            count: usize,
        }
        #[derive(Serialize)]
        struct Data<'a> {
            presence: Members<'a>,
        }
        serde_json::to_string(&Data {
            presence: Members {
                ids: &ids,
                hash,
                count: ids.len(),
            },
        })
        .expect("members serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(s: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(s.into()).unwrap())
    }

    #[test]
    fn users_come_and_go_with_their_first_and_last_socket() {
        let mut r = Roster::default();
        assert_eq!(
            r.join("1.1", "alice", info("1")),
            Some(Change::Added("alice".into()))
        );
        // The same socket again (the list already had it): nothing.
        assert_eq!(r.join("1.1", "alice", info("1")), None);
        assert_eq!(r.join("1.2", "alice", info("1")), None);
        assert_eq!(
            r.join("2.1", "bob", None),
            Some(Change::Added("bob".into()))
        );
        assert_eq!(r.user_count(), 2);
        assert_eq!(r.leave("1.1"), None);
        assert_eq!(r.leave("1.1"), None);
        assert_eq!(r.leave("1.2"), Some(Change::Removed("alice".into())));
        assert_eq!(r.leave("9.9"), None);
        assert_eq!(r.user_count(), 1);
    }

    #[test]
    fn subscription_data_lists_users_once() {
        let mut r = Roster::default();
        r.join("1.1", "b", info(r#"{"n":"B"}"#));
        r.join("1.2", "b", info(r#"{"n":"B"}"#));
        r.join("2.1", "a", None);
        assert_eq!(
            r.subscription_data(),
            r#"{"presence":{"ids":["a","b"],"hash":{"a":null,"b":{"n":"B"}},"count":2}}"#
        );
    }
}
