//! The cluster's certificate authority: makes the CA and issues node
//! certificates, as `switchboard ca` and the tests do. ECDSA P-256
//! throughout; each node certificate carries its identity SAN
//! ([`super::identity`]), CN=NAME, and any extra names asked for.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::Engine;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::identity::{IdentityError, PeerIdentity, validate_name};
use crate::membership::Role;

/// How long the CA is valid.
pub const CA_DAYS: u32 = 3650;
/// How long a node certificate is valid unless asked otherwise.
pub const DEFAULT_DAYS: u32 = 365;

/// Why the CA could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A CA that can issue: its certificate and key.
pub struct CertificateAuthority {
    pem: Pem,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// A new self-signed CA, valid for [`CA_DAYS`].
    pub fn generate() -> Result<Self, AuthorityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "switchboard cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key)?;
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        Self::from_pem(pem)
    }

    /// The CA in `pem`.
    pub fn from_pem(pem: Pem) -> Result<Self, AuthorityError> {
        let key = KeyPair::from_pem(&pem.key)?;
        let issuer = Issuer::from_ca_cert_pem(&pem.cert, key)?;
        Ok(Self { pem, issuer })
    }

    /// The CA's certificate and key.
    pub fn pem(&self) -> &Pem {
        &self.pem
    }

    /// A certificate for `name` in `role`, valid for `days`, with `extra`
    /// DNS names or IP addresses besides the identity SAN.
    pub fn issue(
        &self,
        name: &str,
        role: Role,
        extra: &[String],
        days: u32,
    ) -> Result<Pem, AuthorityError> {
        validate_name(name)?;
        let identity = PeerIdentity {
            name: name.to_owned(),
            role,
        };
        let mut sans = vec![identity.san()];
        sans.extend(extra.iter().cloned());
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node both dials and is dialed (brokers hand over to each
        // other; gateways are clients): one certificate serves both ends.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Valid from an hour ago (clocks differ) for `days`, with a random serial
/// so that each issue is told apart.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

/// The files `switchboard ca init` writes in `dir`.
pub fn ca_files(dir: &Path) -> [PathBuf; 3] {
    [
        dir.join("ca.crt"),
        dir.join("ca.key"),
        dir.join("gossip.key"),
    ]
}

/// `switchboard ca init`: a new CA and gossip key in `dir`; returns the
/// files written. Existing files are kept unless `force`.
pub fn init_dir(dir: &Path, force: bool) -> Result<Vec<PathBuf>, AuthorityError> {
    let [crt, key, gossip] = ca_files(dir);
    refuse_overwrite(&[&crt, &key, &gossip], force)?;
    mkdir(dir)?;
    let ca = CertificateAuthority::generate()?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let gossip_key = format!(
        "# Switchboard gossip keyring: the first key encrypts, every key decrypts.\n{}\n",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    write(&crt, &ca.pem.cert, false)?;
    write(&key, &ca.pem.key, true)?;
    write(&gossip, &gossip_key, true)?;
    Ok(vec![crt, key, gossip])
}

/// Loads the CA that `init_dir` wrote in `dir`.
pub fn load_dir(dir: &Path) -> Result<CertificateAuthority, AuthorityError> {
    let [crt, key, _] = ca_files(dir);
    CertificateAuthority::from_pem(Pem {
        cert: read(&crt)?,
        key: read(&key)?,
    })
}

/// `switchboard ca issue`: writes `dir/NAME.crt` and `dir/NAME.key`,
/// signed by the CA in `dir`, replacing earlier ones (a re-issue is how
/// certificates rotate). Returns the two paths.
pub fn issue_into_dir(
    dir: &Path,
    name: &str,
    role: Role,
    extra: &[String],
    days: u32,
) -> Result<[PathBuf; 2], AuthorityError> {
    validate_name(name)?;
    let ca = load_dir(dir)?;
    let pem = ca.issue(name, role, extra, days)?;
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    // Key first, then certificate, each replaced whole (written aside and
    // renamed): a node reloading in between sees the old pair or a key
    // that its old certificate does not match, which it refuses and retries.
    write(&key, &pem.key, true)?;
    write(&crt, &pem.cert, false)?;
    Ok([crt, key])
}

/// `switchboard ca setup`: credentials for a whole cluster, made once and
/// kept, as a one-shot container can lay them out on every start. The CA
/// and gossip key in `ca_dir` (made if none is there); for each node a
/// folder `out/NAME` with `ca.crt`, `gossip.key` (copied from `ca_dir` on
/// every run, which is how a new CA bundle or keyring reaches the nodes),
/// and `NAME.crt` and `NAME.key`, issued only if missing. Returns the
/// paths written.
pub fn setup(
    ca_dir: &Path,
    out: &Path,
    nodes: &[(String, Role)],
    days: u32,
) -> Result<Vec<PathBuf>, AuthorityError> {
    for (name, _) in nodes {
        validate_name(name)?;
    }
    let mut written = Vec::new();
    let [crt, _, gossip] = ca_files(ca_dir);
    if !crt.exists() {
        written.extend(init_dir(ca_dir, false)?);
    }
    let ca = load_dir(ca_dir)?;
    let (ca_pem, gossip_key) = (read(&crt)?, read(&gossip)?);
    for (name, role) in nodes {
        let dir = out.join(name);
        mkdir(&dir)?;
        for (path, text, secret) in [
            (dir.join("ca.crt"), &ca_pem, false),
            (dir.join("gossip.key"), &gossip_key, true),
        ] {
            if read(&path).ok().as_ref() != Some(text) {
                write(&path, text, secret)?;
                written.push(path);
            }
        }
        let (node_crt, node_key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        if !(node_crt.exists() && node_key.exists()) {
            let pem = ca.issue(name, *role, &[], days)?;
            write(&node_key, &pem.key, true)?;
            write(&node_crt, &pem.cert, false)?;
            written.extend([node_crt, node_key]);
        }
    }
    Ok(written)
}

fn refuse_overwrite(paths: &[&PathBuf], force: bool) -> Result<(), AuthorityError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) if !force => Err(AuthorityError::Exists((*p).clone())),
        _ => Ok(()),
    }
}

fn mkdir(dir: &Path) -> Result<(), AuthorityError> {
    std::fs::create_dir_all(dir).map_err(|source| AuthorityError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, AuthorityError> {
    std::fs::read_to_string(path).map_err(|source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `text` to a temporary file beside `path` and renames it over
/// `path`; secrets are readable by their owner only.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), AuthorityError> {
    let io = |source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::cert_info;

    fn der(pem: &str) -> Vec<u8> {
        <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::from_pem_slice(
            pem.as_bytes(),
        )
        .unwrap()
        .to_vec()
    }

    #[test]
    fn issued_certificates_carry_one_identity_and_fresh_serials() {
        let ca = CertificateAuthority::generate().unwrap();
        let a = ca
            .issue(
                "b1",
                Role::Broker,
                &["10.0.0.1".into(), "b1.local".into()],
                30,
            )
            .unwrap();
        let b = ca.issue("b1", Role::Broker, &[], 30).unwrap();
        let (ia, ib) = (
            cert_info(&der(&a.cert)).unwrap(),
            cert_info(&der(&b.cert)).unwrap(),
        );
        assert_eq!(ia.identity.name, "b1");
        assert_eq!(ia.identity.role, Role::Broker);
        assert_ne!(ia.serial, ib.serial);
        assert!(ca.issue("B1", Role::Broker, &[], 30).is_err());
    }

    #[test]
    fn a_second_identity_san_is_refused() {
        let ca = CertificateAuthority::generate().unwrap();
        let two = ca
            .issue("b1", Role::Broker, &["b2.broker.switchboard".into()], 30)
            .unwrap();
        assert!(matches!(
            cert_info(&der(&two.cert)),
            Err(IdentityError::TwoIdentities(..))
        ));
        let ca_cert = cert_info(&der(&ca.pem().cert));
        assert_eq!(ca_cert, Err(IdentityError::NoIdentity));
    }

    #[test]
    fn setup_makes_what_is_missing_and_keeps_the_rest() {
        let root = std::env::temp_dir().join(format!("sb-ca-setup-{}", std::process::id()));
        let (ca_dir, out) = (root.join("ca"), root.join("out"));
        let nodes = |names: &[(&str, Role)]| -> Vec<(String, Role)> {
            names.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect()
        };
        let first = setup(&ca_dir, &out, &nodes(&[("b1", Role::Broker)]), 30).unwrap();
        assert_eq!(first.len(), 3 + 4, "{first:?}");
        let b1 = read(&out.join("b1/b1.crt")).unwrap();
        let info = cert_info(&der(&b1)).unwrap();
        assert_eq!(
            (info.identity.name.as_str(), info.identity.role),
            ("b1", Role::Broker)
        );
        // Again, with a gateway added: b1 keeps its certificate, g1 gets one.
        let two = nodes(&[("b1", Role::Broker), ("g1", Role::Gateway)]);
        let second = setup(&ca_dir, &out, &two, 30).unwrap();
        assert_eq!(second.len(), 4, "{second:?}");
        assert_eq!(read(&out.join("b1/b1.crt")).unwrap(), b1);
        // A rotated keyring in the CA folder reaches every node on the next run.
        let keyring = read(&ca_dir.join("gossip.key")).unwrap() + "# rotated\n";
        write(&ca_dir.join("gossip.key"), &keyring, true).unwrap();
        let third = setup(&ca_dir, &out, &two, 30).unwrap();
        assert_eq!(
            third,
            vec![out.join("b1/gossip.key"), out.join("g1/gossip.key")]
        );
        assert!(setup(&ca_dir, &out, &nodes(&[("B 1", Role::Broker)]), 30).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
