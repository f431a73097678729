//! Who may call which broker RPC (sans-IO). Over mutual TLS every
//! connection carries the identity its certificate proved
//! ([`TlsPeer`]); each RPC is decided here, once, from that identity and
//! the name the request acts as:
//!
//! - gateway RPCs (attach, detach, subscribe, unsubscribe, publish, leave,
//!   presence, history, control, channels, nodes) only from gateways, and
//!   those that name a gateway only as a gateway the caller's certificate
//!   covers (its name, or for a gateway certificate N also `N-<anything>`:
//!   the replicas sharing it);
//! - broker-to-broker RPCs (`Release`, `Claim`) only from brokers, naming
//!   the caller as the broker that takes (`to`) or gives (`from`);
//! - replication RPCs (`Prepare`, `Commit`, `Replicate`) only from brokers,
//!   naming the caller as the candidate or the leader.
//!
//! A cluster started `--insecure` has no identities: every call is let
//! through, as before mutual TLS.

use std::fmt;

use switchboard_cluster::{
    membership::Role,
    tls::{PeerIdentity, TlsPeer, identity::role_label},
};
use tonic::transport::server::TcpConnectInfo;

/// How the broker's server authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAuth {
    /// Mutual TLS: every call must come with a proven identity.
    MutualTls,
    /// `--insecure`: the network is trusted; no identities.
    Insecure,
}

/// How a kind of connection authenticates, by what tonic says of it
/// ([`tonic::transport::server::Connected::ConnectInfo`]): the server's
/// mode follows from the connections it serves, so a TLS listener cannot
/// be served without authorization by mistake.
pub trait ConnectionAuth {
    const AUTH: PeerAuth;
}

impl ConnectionAuth for TlsPeer {
    const AUTH: PeerAuth = PeerAuth::MutualTls;
}

impl ConnectionAuth for TcpConnectInfo {
    const AUTH: PeerAuth = PeerAuth::Insecure;
}

/// Connections that say nothing of their peer (the simulation's plain
/// turmoil streams).
impl ConnectionAuth for () {
    const AUTH: PeerAuth = PeerAuth::Insecure;
}

/// A broker RPC, as authorization names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Attach,
    Detach,
    Subscribe,
    Unsubscribe,
    Leave,
    Publish,
    Presence,
    PresenceStats,
    History,
    Control,
    Channels,
    Nodes,
    Release,
    Claim,
    Prepare,
    Commit,
    Replicate,
    Retire,
}

impl Rpc {
    pub const ALL: [Rpc; 18] = [
        Rpc::Attach,
        Rpc::Detach,
        Rpc::Subscribe,
        Rpc::Unsubscribe,
        Rpc::Leave,
        Rpc::Publish,
        Rpc::Presence,
        Rpc::PresenceStats,
        Rpc::History,
        Rpc::Control,
        Rpc::Channels,
        Rpc::Nodes,
        Rpc::Release,
        Rpc::Claim,
        Rpc::Prepare,
        Rpc::Commit,
        Rpc::Replicate,
        Rpc::Retire,
    ];

    /// The role allowed to call it.
    pub fn caller_role(self) -> Role {
        match self {
            Rpc::Release
            | Rpc::Claim
            | Rpc::Prepare
            | Rpc::Commit
            | Rpc::Replicate
            | Rpc::Retire => Role::Broker,
            _ => Role::Gateway,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rpc::Attach => "attach",
            Rpc::Detach => "detach",
            Rpc::Subscribe => "subscribe",
            Rpc::Unsubscribe => "unsubscribe",
            Rpc::Leave => "leave",
            Rpc::Publish => "publish",
            Rpc::Presence => "presence",
            Rpc::PresenceStats => "presence_stats",
            Rpc::History => "history",
            Rpc::Control => "control",
            Rpc::Channels => "channels",
            Rpc::Nodes => "nodes",
            Rpc::Release => "release",
            Rpc::Claim => "claim",
            Rpc::Prepare => "prepare",
            Rpc::Commit => "commit",
            Rpc::Replicate => "replicate",
            Rpc::Retire => "retire",
        }
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{rpc}: the caller proved no identity")]
    Unauthenticated { rpc: Rpc },
    #[error("{rpc}: only a {} may call it, not {caller}", role_label(*needed))]
    WrongRole {
        rpc: Rpc,
        needed: Role,
        caller: PeerIdentity,
    },
    #[error("{rpc}: {caller} may act only as itself, not as {claimed:?}")]
    NotItself {
        rpc: Rpc,
        caller: PeerIdentity,
        claimed: String,
    },
}

impl Denied {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Unauthenticated { .. } => "unauthenticated",
            Denied::WrongRole { .. } => "role",
            Denied::NotItself { .. } => "impersonation",
        }
    }
}

/// Decides `rpc` from `caller` (the proven identity, if any), acting as
/// `acting_as` (the gateway or broker name the request carries, for the
/// RPCs that carry one).
pub fn authorize(
    auth: PeerAuth,
    caller: Option<&PeerIdentity>,
    rpc: Rpc,
    acting_as: Option<&str>,
) -> Result<(), Denied> {
    if auth == PeerAuth::Insecure {
        return Ok(());
    }
    let caller = caller.ok_or(Denied::Unauthenticated { rpc })?;
    let needed = rpc.caller_role();
    if caller.role != needed {
        return Err(Denied::WrongRole {
            rpc,
            needed,
            caller: caller.clone(),
        });
    }
    match acting_as {
        Some(claimed) if !caller.covers(claimed, caller.role) => Err(Denied::NotItself {
            rpc,
            caller: caller.clone(),
            claimed: claimed.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Lets `request` through if its caller may call `rpc` acting as
/// `acting_as` ([`authorize`]); refuses it with `PERMISSION_DENIED`
/// (`UNAUTHENTICATED` without an identity) otherwise, counted and logged.
/// Names are not secrets; nothing else of the request is logged.
pub fn check<T>(
    auth: PeerAuth,
    request: &tonic::Request<T>,
    rpc: Rpc,
    acting_as: Option<&str>,
) -> Result<(), tonic::Status> {
    let caller = request.extensions().get::<TlsPeer>().map(|p| &p.identity);
    authorize(auth, caller, rpc, acting_as).map_err(|denied| {
        tracing::warn!(rpc = %rpc, caller = ?caller, reason = denied.reason(), "broker RPC refused");
        metrics::counter!(
            "switchboard_broker_rpc_denied_total",
            "rpc" => rpc.label(),
            "reason" => denied.reason()
        )
        .increment(1);
        match denied {
            Denied::Unauthenticated { .. } => tonic::Status::unauthenticated(denied.to_string()),
            _ => tonic::Status::permission_denied(denied.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, role: Role) -> PeerIdentity {
        PeerIdentity {
            name: name.into(),
            role,
        }
    }

    #[test]
    fn insecure_lets_everything_through() {
        for rpc in Rpc::ALL {
            assert_eq!(authorize(PeerAuth::Insecure, None, rpc, Some("x")), Ok(()));
        }
    }

    #[test]
    fn without_an_identity_nothing_passes() {
        for rpc in Rpc::ALL {
            assert_eq!(
                authorize(PeerAuth::MutualTls, None, rpc, None),
                Err(Denied::Unauthenticated { rpc })
            );
        }
    }

    #[test]
    fn each_role_calls_only_its_rpcs_and_only_as_itself() {
        let g1 = id("g1", Role::Gateway);
        let b1 = id("b1", Role::Broker);
        for rpc in Rpc::ALL {
            let (own, other) = match rpc.caller_role() {
                Role::Gateway => (&g1, &b1),
                Role::Broker => (&b1, &g1),
            };
            assert_eq!(
                authorize(PeerAuth::MutualTls, Some(own), rpc, Some(&own.name)),
                Ok(())
            );
            assert_eq!(authorize(PeerAuth::MutualTls, Some(own), rpc, None), Ok(()));
            assert!(matches!(
                authorize(PeerAuth::MutualTls, Some(other), rpc, Some(&other.name)),
                Err(Denied::WrongRole { .. })
            ));
            assert!(matches!(
                authorize(PeerAuth::MutualTls, Some(own), rpc, Some("someone-else")),
                Err(Denied::NotItself { .. })
            ));
        }
        assert_eq!(Rpc::Release.caller_role(), Role::Broker);
        assert_eq!(Rpc::Claim.caller_role(), Role::Broker);
        assert_eq!(Rpc::Prepare.caller_role(), Role::Broker);
        assert_eq!(Rpc::Replicate.caller_role(), Role::Broker);
        assert_eq!(Rpc::Attach.caller_role(), Role::Gateway);
        // A shared gateway certificate covers its replicas, not others.
        let shared = id("sb-gateway", Role::Gateway);
        let attach = |name| authorize(PeerAuth::MutualTls, Some(&shared), Rpc::Attach, Some(name));
        assert_eq!(attach("sb-gateway-7d9f-x2x7q"), Ok(()));
        assert!(attach("g1").is_err());
        // A broker's only ever covers itself.
        let release = authorize(PeerAuth::MutualTls, Some(&b1), Rpc::Release, Some("b1-x"));
        assert!(release.is_err());
    }
}
