//! The gossip keyring: the cluster's shared keys, which seal every gossip
//! packet (ChaCha20-Poly1305) so that only members holding a key can speak
//! or listen. The first key in the file is the primary and seals; every
//! key opens, so a key is rotated without downtime (Serf, Consul): add the
//! new key as a second line on every node, move it to the first line on
//! every node, then remove the old one.
//!
//! A sealed packet is `version || nonce || ciphertext+tag`, the version
//! byte also the associated data. Nonces are random (12 bytes) per packet.
//!
//! Parsing, sealing, opening and the reload decision are plain functions;
//! [`watch_file`] only reads the file every [`RELOAD_EVERY`].

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    ChaCha20Poly1305, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio_util::sync::CancellationToken;

/// The packet format's version: the first byte of every sealed packet.
pub const VERSION: u8 = 1;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What sealing adds to a packet.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// How often [`watch_file`] re-reads the key file. Content is compared,
/// not modification times, which is robust to Kubernetes' symlink swaps.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Why a key file was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("the gossip key file holds no key")]
    Empty,
    #[error("line {line} of the gossip key file is not base64")]
    NotBase64 { line: usize },
    #[error("line {line} of the gossip key file is {len} bytes, not {KEY_LEN}")]
    WrongLength { line: usize, len: usize },
    #[error("cannot read it: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// Why a received packet was dropped (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a sealed packet of a known version, or too short to be one.
    Malformed,
    /// No key in the ring opens it: another key, or tampered with.
    Auth,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Auth => "auth",
        }
    }
}

/// The keys a node holds, primary first.
#[derive(Clone)]
pub struct Keyring {
    ciphers: Vec<ChaCha20Poly1305>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log.
        write!(f, "Keyring({} keys)", self.ciphers.len())
    }
}

impl Keyring {
    /// Parses a key file: one base64 key per line; blank lines and `#`
    /// comments ignored.
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let mut ciphers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let key = STANDARD
                .decode(line)
                .map_err(|_| KeyringError::NotBase64 { line: n })?;
            let key: [u8; KEY_LEN] =
                key.as_slice()
                    .try_into()
                    .map_err(|_| KeyringError::WrongLength {
                        line: n,
                        len: key.len(),
                    })?;
            ciphers.push(ChaCha20Poly1305::new(&Key::from(key)));
        }
        if ciphers.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { ciphers })
    }

    /// How many keys open packets.
    pub fn len(&self) -> usize {
        self.ciphers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ciphers.is_empty()
    }

    /// Seals `plain` with the primary key under `nonce`.
    pub fn seal(&self, plain: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let sealed = self.ciphers[0]
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &[VERSION],
                },
            )
            .expect("ChaCha20-Poly1305 seals any packet that fits in memory");
        let mut packet = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        packet.push(VERSION);
        packet.extend_from_slice(&nonce);
        packet.extend_from_slice(&sealed);
        packet
    }

    /// Opens a sealed packet with whichever key sealed it.
    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, Rejection> {
        if packet.len() < OVERHEAD || packet[0] != VERSION {
            return Err(Rejection::Malformed);
        }
        let (nonce, sealed) = packet[1..].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce's length");
        let nonce = Nonce::from(nonce);
        self.ciphers
            .iter()
            .find_map(|c| {
                c.decrypt(
                    &nonce,
                    Payload {
                        msg: sealed,
                        aad: &[VERSION],
                    },
                )
                .ok()
            })
            .ok_or(Rejection::Auth)
    }
}

/// A new random key, as a key file line.
pub fn generate_key() -> String {
    let mut key = [0u8; KEY_LEN];
    rand::rng().fill(&mut key);
    STANDARD.encode(key)
}

fn read_text(path: &Path) -> Result<String, KeyringError> {
    std::fs::read_to_string(path).map_err(|e| KeyringError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The keyring in use, replaced whole when the file changes.
#[derive(Clone, Debug)]
pub struct SharedKeyring(Arc<RwLock<Arc<Keyring>>>);

impl SharedKeyring {
    pub fn new(keyring: Keyring) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(keyring))))
    }

    pub fn current(&self) -> Arc<Keyring> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, keyring: Keyring) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keyring);
    }
}

/// Seals and opens gossip packets: the keyring and where nonces come from.
pub struct Sealer {
    keyring: SharedKeyring,
    nonces: StdRng,
}

impl Sealer {
    /// Nonces from a generator seeded by the operating system.
    pub fn new(keyring: SharedKeyring) -> Self {
        Self::with_nonces(keyring, StdRng::from_os_rng())
    }

    /// Nonces from `nonces`: a simulation's seeded generator makes them
    /// repeatable.
    pub fn with_nonces(keyring: SharedKeyring, nonces: StdRng) -> Self {
        Self { keyring, nonces }
    }

    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.nonces.fill(&mut nonce);
        self.keyring.current().seal(plain, nonce)
    }

    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, Rejection> {
        self.keyring.current().open(packet)
    }
}

/// What a re-read of the key file means.
#[derive(Debug)]
pub enum Reload {
    /// Same content as the keys in use.
    Unchanged,
    /// New keys to use.
    Replace(Keyring),
    /// The file does not parse (or cannot be read): the keys in use stay.
    /// `first` is whether this failure is new, and so worth a log line.
    Keep { error: KeyringError, first: bool },
}

/// The reload decision for one key file: what was last loaded, and the
/// last failure reported (so that a broken file is logged once).
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    loaded: String,
    failed: Option<KeyringError>,
}

impl KeyFile {
    /// Reads the file at start: a failure here refuses to start.
    pub fn open(path: &Path) -> Result<(Self, Keyring), KeyringError> {
        let text = read_text(path)?;
        let keyring = Keyring::parse(&text)?;
        let file = Self {
            path: path.to_owned(),
            loaded: text,
            failed: None,
        };
        Ok((file, keyring))
    }

    /// Decides on a fresh read of the file.
    pub fn consider(&mut self, read: Result<String, KeyringError>) -> Reload {
        let parsed = read.and_then(|text| Keyring::parse(&text).map(|k| (text, k)));
        match parsed {
            Ok((text, _)) if text == self.loaded => {
                self.failed = None;
                Reload::Unchanged
            }
            Ok((text, keyring)) => {
                self.loaded = text;
                self.failed = None;
                Reload::Replace(keyring)
            }
            Err(error) => {
                let first = self.failed.as_ref() != Some(&error);
                self.failed = Some(error.clone());
                Reload::Keep { error, first }
            }
        }
    }
}

/// Re-reads `file` every [`RELOAD_EVERY`] into `keyring` until `shutdown`.
/// Membership and connections are untouched: the next packet simply uses
/// the new keys.
pub async fn watch_file(mut file: KeyFile, keyring: SharedKeyring, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let read = read_text(&file.path);
        match file.consider(read) {
            Reload::Unchanged => {}
            Reload::Replace(new) => {
                tracing::info!(path = %file.path.display(), keys = new.len(), "gossip keys reloaded");
                keyring.replace(new);
            }
            Reload::Keep { error, first: true } => {
                tracing::error!(path = %file.path.display(), error = %error, "gossip key file refused; keeping the keys in use");
            }
            Reload::Keep { first: false, .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        STANDARD.encode([b; KEY_LEN])
    }

    #[test]
    fn parses_keys_skipping_comments_and_blanks() {
        let ring = Keyring::parse(&format!("# primary\n{}\n\n  {}  \n", key(1), key(2))).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(
            Keyring::parse("# none\n\n").unwrap_err(),
            KeyringError::Empty
        );
        assert_eq!(
            Keyring::parse(&format!("{}\nnot base64!\n", key(1))).unwrap_err(),
            KeyringError::NotBase64 { line: 2 }
        );
        assert_eq!(
            Keyring::parse(&STANDARD.encode([0u8; 16])).unwrap_err(),
            KeyringError::WrongLength { line: 1, len: 16 }
        );
        assert_eq!(Keyring::parse(&generate_key()).unwrap().len(), 1);
    }

    #[test]
    fn primary_seals_every_key_opens() {
        let old = Keyring::parse(&key(1)).unwrap();
        let both = Keyring::parse(&format!("{}\n{}", key(2), key(1))).unwrap();
        let new = Keyring::parse(&key(2)).unwrap();
        let from_old = old.seal(b"ping", [7; NONCE_LEN]);
        assert_eq!(from_old.len(), 4 + OVERHEAD);
        assert_eq!(both.open(&from_old).unwrap(), b"ping");
        assert_eq!(new.open(&from_old), Err(Rejection::Auth));
        // Mid-rotation, the node with both keys seals with the new one,
        // which a node still on the old key alone cannot read.
        let from_both = both.seal(b"pong", [8; NONCE_LEN]);
        assert_eq!(new.open(&from_both).unwrap(), b"pong");
        assert_eq!(old.open(&from_both), Err(Rejection::Auth));
    }

    #[test]
    fn refuses_tampered_plain_and_short_packets() {
        let ring = Keyring::parse(&key(1)).unwrap();
        let mut packet = ring.seal(b"hello", [1; NONCE_LEN]);
        let last = packet.len() - 1;
        packet[last] ^= 1;
        assert_eq!(ring.open(&packet), Err(Rejection::Auth));
        let mut other_version = ring.seal(b"hello", [1; NONCE_LEN]);
        other_version[0] = 2;
        assert_eq!(ring.open(&other_version), Err(Rejection::Malformed));
        assert_eq!(ring.open(&[VERSION; 10]), Err(Rejection::Malformed));
        assert_eq!(ring.open(&[]), Err(Rejection::Malformed));
        let plain = [VERSION; 64];
        assert_eq!(ring.open(&plain), Err(Rejection::Auth));
    }

    #[test]
    fn sealer_draws_a_fresh_nonce_per_packet() {
        let shared = SharedKeyring::new(Keyring::parse(&key(1)).unwrap());
        let mut sealer = Sealer::with_nonces(shared.clone(), StdRng::seed_from_u64(1));
        let (a, b) = (sealer.seal(b"x"), sealer.seal(b"x"));
        assert_ne!(a[1..1 + NONCE_LEN], b[1..1 + NONCE_LEN]);
        assert_eq!(sealer.open(&a).unwrap(), b"x");
        shared.replace(Keyring::parse(&key(2)).unwrap());
        assert_eq!(sealer.open(&a), Err(Rejection::Auth), "reload takes effect");
    }

    #[test]
    fn reload_replaces_on_change_and_keeps_keys_on_a_broken_file() {
        let dir = std::env::temp_dir().join(format!("sb-keyring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gossip.key");
        std::fs::write(&path, key(1)).unwrap();
        let (mut file, ring) = KeyFile::open(&path).unwrap();
        assert_eq!(ring.len(), 1);
        assert!(matches!(file.consider(Ok(key(1))), Reload::Unchanged));
        let two = format!("{}\n{}", key(1), key(2));
        assert!(matches!(file.consider(Ok(two.clone())), Reload::Replace(r) if r.len() == 2));
        assert!(matches!(file.consider(Ok(two.clone())), Reload::Unchanged));
        // A broken file is reported once, and the keys in use stay.
        assert!(matches!(
            file.consider(Ok("garbage".into())),
            Reload::Keep { first: true, .. }
        ));
        assert!(matches!(
            file.consider(Ok("garbage".into())),
            Reload::Keep { first: false, .. }
        ));
        assert!(matches!(file.consider(Ok(two)), Reload::Unchanged));
        assert!(matches!(
            file.consider(Ok(String::new())),
            Reload::Keep { first: true, .. }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
