//! Who a certificate says its holder is: a name and a role, carried as one
//! DNS subject alternative name `NAME.ROLE.switchboard` (plus CN=NAME for
//! people's tools). Sans-IO: parsing and checks over bytes and strings.
//!
//! The identity rides in a DNS SAN because Helm's `genSignedCert` and
//! cert-manager can produce one, and because rustls verifies a server by a
//! DNS name: a gateway dialing broker `b1` asks for `b1.broker.switchboard`.

use std::fmt;

use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::membership::Role;

/// The DNS suffix under which identities live.
pub const IDENTITY_DOMAIN: &str = "switchboard";

/// Longest name: a DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// A node's authenticated identity, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub name: String,
    pub role: Role,
}

impl PeerIdentity {
    /// The identity SAN for this name and role: `NAME.ROLE.switchboard`.
    pub fn san(&self) -> String {
        identity_san(&self.name, self.role)
    }

    /// Whether this certificate identity may act as node `name` in `role`.
    /// A broker's certificate covers exactly its name (the ring places
    /// channels by it). A gateway's certificate for N also covers gateways
    /// named `N-<anything>`: replicas of one Deployment share a
    /// certificate and are named after their pods (the Helm chart's
    /// `<fullname>-gateway` covers `<fullname>-gateway-7d9f-x2x7q`).
    pub fn covers(&self, name: &str, role: Role) -> bool {
        if role != self.role {
            return false;
        }
        match role {
            Role::Broker => name == self.name,
            Role::Gateway => {
                name == self.name
                    || name
                        .strip_prefix(self.name.as_str())
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|suffix| !suffix.is_empty())
            }
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", role_label(self.role), self.name)
    }
}

/// Why a name or a certificate does not give an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "name {0:?} is not a DNS label (lowercase letters, digits and '-', \
         not starting or ending with '-', 1 to 63 characters)"
    )]
    BadName(String),
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error(
        "the certificate has no identity SAN (NAME.broker.switchboard or NAME.gateway.switchboard)"
    )]
    NoIdentity,
    #[error("the certificate has more than one identity SAN: {0} and {1}")]
    TwoIdentities(String, String),
}

/// `broker` or `gateway`, as the SAN spells it.
pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::Broker => "broker",
        Role::Gateway => "gateway",
    }
}

/// The identity SAN of `name` in `role`.
pub fn identity_san(name: &str, role: Role) -> String {
    format!("{name}.{}.{IDENTITY_DOMAIN}", role_label(role))
}

/// Checks that `name` can be an identity: a DNS label in lowercase.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let label = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(label)
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(name.to_owned()))
    }
}

/// The identity a DNS SAN names, if it is an identity SAN.
pub fn parse_identity_san(dns: &str) -> Option<PeerIdentity> {
    let rest = dns.strip_suffix(IDENTITY_DOMAIN)?.strip_suffix('.')?;
    let (name, role) = rest.rsplit_once('.')?;
    let role = match role {
        "broker" => Role::Broker,
        "gateway" => Role::Gateway,
        _ => return None,
    };
    validate_name(name).ok()?;
    Some(PeerIdentity {
        name: name.to_owned(),
        role,
    })
}

/// What a verified certificate tells about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: PeerIdentity,
    /// The serial number in hex: which issue of the certificate it is.
    pub serial: String,
}

/// The identity (exactly one identity SAN) and serial of a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, IdentityError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let mut found: Option<(String, PeerIdentity)> = None;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
        let GeneralName::DNSName(dns) = name else {
            continue;
        };
        let Some(identity) = parse_identity_san(dns) else {
            continue;
        };
        if let Some((first, _)) = &found {
            return Err(IdentityError::TwoIdentities(
                first.clone(),
                (*dns).to_owned(),
            ));
        }
        found = Some(((*dns).to_owned(), identity));
    }
    let (_, identity) = found.ok_or(IdentityError::NoIdentity)?;
    Ok(CertInfo {
        identity,
        serial: cert.raw_serial_as_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["b1", "gateway-7", "a", &"x".repeat(63)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in ["", "B1", "b_1", "-b", "b-", "b.1", &"x".repeat(64), "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_sans_round_trip_and_nothing_else_parses() {
        let id = PeerIdentity {
            name: "b1".into(),
            role: Role::Broker,
        };
        assert_eq!(id.san(), "b1.broker.switchboard");
        assert_eq!(parse_identity_san(&id.san()), Some(id));
        assert_eq!(
            parse_identity_san("g1.gateway.switchboard").map(|i| i.role),
            Some(Role::Gateway)
        );
        for other in [
            "b1.admin.switchboard",
            "broker.switchboard",
            "b1.broker.switchboard.evil",
            "B1.broker.switchboard",
            "a.b1.broker.switchboard",
            "localhost",
        ] {
            assert_eq!(parse_identity_san(other), None, "{other}");
        }
    }

    #[test]
    fn gateway_certificates_cover_their_replicas_broker_certificates_only_themselves() {
        let g = PeerIdentity {
            name: "sb-gateway".into(),
            role: Role::Gateway,
        };
        assert!(g.covers("sb-gateway", Role::Gateway));
        assert!(g.covers("sb-gateway-7d9f-x2x7q", Role::Gateway));
        for not in ["sb-gateway-", "sb-gatewayx", "sb-gatewa", "other", "sb"] {
            assert!(!g.covers(not, Role::Gateway), "{not}");
        }
        assert!(!g.covers("sb-gateway", Role::Broker));
        let b = PeerIdentity {
            name: "b1".into(),
            role: Role::Broker,
        };
        assert!(b.covers("b1", Role::Broker));
        assert!(!b.covers("b1-x", Role::Broker));
        assert!(!b.covers("b1", Role::Gateway));
    }
}
