//! Presence: which clients are subscribed to a channel, and through which
//! gateway. It is soft state at the channel's owner: a gateway that goes away
//! takes its clients' entries with it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::GatewayId;

/// One subscribed client, as other clients see it (in presence replies and
/// `join`/`leave` frames). Servers carry the token's `info` claim as raw
/// JSON; a client reading frames may choose another type for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo<I = Box<RawValue>> {
    pub client_id: String,
    pub user_id: String,
    /// The `info` claim of the client's token, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<I>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PresenceStats {
    pub num_clients: usize,
    pub num_users: usize,
}

#[derive(Debug, Default)]
pub struct Presence {
    clients: HashMap<String, (GatewayId, ClientInfo)>,
    users: HashMap<String, usize>,
}

impl Presence {
    /// Adds a client; returns false if it was already present.
    pub fn add(&mut self, gateway: GatewayId, info: ClientInfo) -> bool {
        if self.clients.contains_key(&info.client_id) {
            return false;
        }
        *self.users.entry(info.user_id.clone()).or_default() += 1;
        self.clients.insert(info.client_id.clone(), (gateway, info));
        true
    }

    pub fn remove(&mut self, client_id: &str) -> Option<ClientInfo> {
        let (_, info) = self.clients.remove(client_id)?;
        if let Some(n) = self.users.get_mut(&info.user_id) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(&info.user_id);
            }
        }
        Some(info)
    }

    /// Removes every client that came through `gateway`.
    pub fn remove_gateway(&mut self, gateway: &GatewayId) -> Vec<ClientInfo> {
        let gone: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, (g, _))| g == gateway)
            .map(|(id, _)| id.clone())
            .collect();
        gone.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// How many of `user_id`'s connections are present.
    pub fn user_connections(&self, user_id: &str) -> usize {
        self.users.get(user_id).copied().unwrap_or(0)
    }

    pub fn clients(&self) -> Vec<ClientInfo> {
        let mut all: Vec<ClientInfo> = self.clients.values().map(|(_, c)| c.clone()).collect();
        all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        all
    }

    pub fn stats(&self) -> PresenceStats {
        PresenceStats {
            num_clients: self.clients.len(),
            num_users: self.users.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, user: &str) -> ClientInfo {
        ClientInfo {
            client_id: id.into(),
            user_id: user.into(),
            info: None,
        }
    }

    #[test]
    fn counts_unique_users() {
        let g1 = GatewayId::from("g1");
        let g2 = GatewayId::from("g2");
        let mut p = Presence::default();
        assert!(p.add(g1.clone(), client("c1", "alice")));
        assert!(!p.add(g1.clone(), client("c1", "alice")));
        assert!(p.add(g1.clone(), client("c2", "alice")));
        assert!(p.add(g2.clone(), client("c3", "bob")));
        assert_eq!(
            p.stats(),
            PresenceStats {
                num_clients: 3,
                num_users: 2
            }
        );
        assert_eq!(p.remove_gateway(&g1).len(), 2);
        assert_eq!(
            p.stats(),
            PresenceStats {
                num_clients: 1,
                num_users: 1
            }
        );
        assert!(p.remove("c3").is_some());
        assert!(p.is_empty());
    }
}
