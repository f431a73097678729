//! The names processes know each other by: [`GatewayId`] for a gateway,
//! [`BrokerName`] for a broker (what the ring hashes), and [`BrokerAddr`],
//! a broker's name with where to reach it.

use std::{borrow::Borrow, fmt, sync::Arc};

/// The stable name of a gateway.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayId(Arc<str>);

impl From<&str> for GatewayId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl GatewayId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The stable name of a broker: what the ring hashes, and how brokers and
/// gateways refer to it (`--name`, gossip identities, `NotOwner` hints).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerName(Arc<str>);

impl BrokerName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by broker name be asked with the `&str` a ring returns.
impl Borrow<str> for BrokerName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for BrokerName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for BrokerName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl From<&str> for BrokerName {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for BrokerName {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl From<BrokerName> for String {
    fn from(name: BrokerName) -> Self {
        name.0.as_ref().to_owned()
    }
}

impl fmt::Display for BrokerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BrokerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A broker as routers and hand-overs reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Stable name: what the ring hashes.
    pub name: BrokerName,
    /// gRPC address, `host:port`.
    pub addr: String,
}
