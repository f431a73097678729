//! Presence: which clients are subscribed to a channel, and through which
//! gateway. It is soft state at the channel's owner: a gateway that goes away
//! takes its clients' entries with it.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
};

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

/// Largest page of a presence reply, and its size when none is asked for.
pub const MAX_PAGE: usize = 1000;

/// One page of a channel's presence, in `client_id` order.
#[derive(Debug, Clone, Default)]
pub struct PresencePage {
    pub clients: Vec<ClientInfo>,
    /// The `client_id` to ask for the next page after; `None` on the last.
    pub next: Option<String>,
}

#[derive(Debug, Default)]
pub struct Presence {
    // Ordered by client id, so that a page starts where the last ended
    // without sorting the whole set.
    clients: BTreeMap<String, (GatewayId, ClientInfo)>,
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

    /// Every client, sorted by `client_id`.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.clients.values().map(|(_, c)| c.clone()).collect()
    }

    /// Up to `limit` clients (at least 1, at most [`MAX_PAGE`]) whose
    /// `client_id` sorts after `after`.
    pub fn page(&self, after: Option<&str>, limit: usize) -> PresencePage {
        let limit = limit.clamp(1, MAX_PAGE);
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rest = self
            .clients
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, (_, c))| c);
        let clients: Vec<ClientInfo> = rest.by_ref().take(limit).cloned().collect();
        let next = match rest.next() {
            Some(_) => clients.last().map(|c| c.client_id.clone()),
            None => None,
        };
        PresencePage { clients, next }
    }

    pub fn contains(&self, client_id: &str) -> bool {
        self.clients.contains_key(client_id)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
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

    #[test]
    fn pages_give_every_client_once_in_order() {
        let g = GatewayId::from("g");
        let mut p = Presence::default();
        for i in (0..25).rev() {
            p.add(g.clone(), client(&format!("c{i:02}"), "u"));
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = p.page(after.as_deref(), 10);
            assert!(page.clients.len() <= 10);
            seen.extend(page.clients.into_iter().map(|c| c.client_id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let all: Vec<String> = (0..25).map(|i| format!("c{i:02}")).collect();
        assert_eq!(seen, all);
        // A cursor that is gone still places the page; 0 means 1.
        assert_eq!(p.page(Some("c10x"), 0).clients[0].client_id, "c11");
        let end = p.page(Some("c24"), 5);
        assert!(end.clients.is_empty() && end.next.is_none());
        assert_eq!(p.page(None, usize::MAX).clients.len(), 25);
    }
}
