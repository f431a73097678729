//! Verification keys, each for one algorithm and with an optional key id
//! (`kid`), and the choice of the key a token names.
//!
//! Several keys per algorithm let a signing key be rotated with an overlap:
//! tokens name their key by `kid`. A token without `kid` is verified only
//! when exactly one key fits its algorithm, so that it can never be tried
//! against a key it was not meant for.

use std::{collections::HashSet, path::Path};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm as JwkAlgorithm, PublicKeyUse},
};
use serde::Deserialize;
use thiserror::Error;

use crate::config::{AuthConfig, KeyAlgorithm};

/// One key tokens may be verified with.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub(crate) key: DecodingKey,
}

/// Keys from one source: the config, or one JWKS document.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// A configured key that cannot be used, found at startup.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid {alg} key: {source}")]
    Key {
        alg: &'static str,
        source: jsonwebtoken::errors::Error,
    },
    #[error("an HS256 key is a secret, not a PEM key")]
    NotPem,
    #[error("gateway.auth.keys has the kid {0:?} twice")]
    DuplicateKid(String),
    #[error("gateway.auth.jwks: {0}")]
    Jwks(String),
}

/// Why no key fits a token's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKey {
    /// No key of the token's algorithm.
    Algorithm,
    /// Keys of the algorithm, none with the token's `kid`.
    UnknownKid,
    /// No `kid`, and several keys of the algorithm.
    Ambiguous,
}

/// Why a JWKS document was not taken; the keys held before stay in use.
#[derive(Debug, Error)]
pub enum JwksError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("fetching {0}: {1}")]
    Fetch(String, String),
    #[error("JWKS document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("JWKS document is not valid: {0}")]
    Invalid(String),
    #[error("JWKS document has the kid {0:?} twice")]
    DuplicateKid(String),
}

impl KeySet {
    /// The keys in `[gateway.auth]`: the three without `kid`
    /// (`hmac_secret`, `rsa_public_key`, `ec_public_key`) and `keys`.
    pub fn from_config(config: &AuthConfig) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hmac_secret {
            keys.push(VerifyKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(pem) = &config.rsa_public_key {
            keys.push(pem_key(None, KeyAlgorithm::RS256, pem)?);
        }
        if let Some(pem) = &config.ec_public_key {
            keys.push(pem_key(None, KeyAlgorithm::ES256, pem)?);
        }
        let mut kids = HashSet::new();
        for k in &config.keys {
            if !kids.insert(k.kid.as_str()) {
                return Err(KeyError::DuplicateKid(k.kid.clone()));
            }
            keys.push(match k.alg {
                KeyAlgorithm::HS256 => VerifyKey {
                    kid: Some(k.kid.clone()),
                    alg: Algorithm::HS256,
                    key: DecodingKey::from_secret(k.key.as_bytes()),
                },
                alg => pem_key(Some(k.kid.clone()), alg, &k.key)?,
            });
        }
        Ok(Self { keys })
    }

    /// The signing keys of a JWKS document (RFC 7517) for HS256, RS256 and
    /// ES256 (P-256). Keys for other algorithms, curves or uses are
    /// skipped, so that an identity provider may publish them alongside.
    pub fn from_jwks(doc: &[u8]) -> Result<Self, JwksError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_slice(doc).map_err(|e| JwksError::Invalid(e.to_string()))?;
        let mut keys = Vec::new();
        let mut kids = HashSet::new();
        for value in doc.keys {
            // A key type this library does not know is one more to skip.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            let Some(key) = jwk_key(&jwk) else {
                continue;
            };
            if let Some(kid) = &key.kid
                && !kids.insert(kid.clone())
            {
                return Err(JwksError::DuplicateKid(kid.clone()));
            }
            keys.push(key);
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &VerifyKey> {
        self.keys.iter()
    }
}

/// The key for a token whose header says `alg` and `kid`, among `keys`
/// (the config's first, then the JWKS document's).
pub fn select<'a>(
    keys: impl Iterator<Item = &'a VerifyKey>,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<&'a VerifyKey, NoKey> {
    let mut fitting = keys.filter(|k| k.alg == alg).peekable();
    if fitting.peek().is_none() {
        return Err(NoKey::Algorithm);
    }
    match kid {
        Some(kid) => fitting
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or(NoKey::UnknownKid),
        None => {
            let only = fitting.next().ok_or(NoKey::Algorithm)?;
            match fitting.next() {
                None => Ok(only),
                Some(_) => Err(NoKey::Ambiguous),
            }
        }
    }
}

fn pem_key(kid: Option<String>, alg: KeyAlgorithm, pem: &str) -> Result<VerifyKey, KeyError> {
    let text = read_pem(pem)?;
    let (alg, key) = match alg {
        KeyAlgorithm::RS256 => (
            Algorithm::RS256,
            DecodingKey::from_rsa_pem(&text).map_err(|source| KeyError::Key {
                alg: "RS256",
                source,
            })?,
        ),
        KeyAlgorithm::ES256 => (
            Algorithm::ES256,
            DecodingKey::from_ec_pem(&text).map_err(|source| KeyError::Key {
                alg: "ES256",
                source,
            })?,
        ),
        KeyAlgorithm::HS256 => return Err(KeyError::NotPem),
    };
    Ok(VerifyKey { kid, alg, key })
}

/// PEM text as given, or the contents of the file it names.
pub(crate) fn read_pem(value: &str) -> Result<Vec<u8>, KeyError> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(Path::new(value)).map_err(|source| KeyError::KeyFile {
        path: value.to_owned(),
        source,
    })
}

/// A JWK's algorithm: its `alg` if given, else the one its key type has
/// here (RSA: RS256, EC P-256: ES256, oct: HS256).
fn jwk_key(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(JwkAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(JwkAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::OctetKey(_), None | Some(JwkAlgorithm::HS256)) => Algorithm::HS256,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(kid: Option<&str>) -> VerifyKey {
        VerifyKey {
            kid: kid.map(str::to_owned),
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(b"k"),
        }
    }

    #[test]
    fn selects_by_kid_and_without_one_only_when_unambiguous() {
        let two = [hs(Some("a")), hs(Some("b"))];
        assert_eq!(
            select(two.iter(), Algorithm::HS256, Some("b"))
                .unwrap()
                .kid
                .as_deref(),
            Some("b")
        );
        assert_eq!(
            select(two.iter(), Algorithm::HS256, Some("c")).err(),
            Some(NoKey::UnknownKid)
        );
        assert_eq!(
            select(two.iter(), Algorithm::HS256, None).err(),
            Some(NoKey::Ambiguous)
        );
        assert_eq!(
            select(two.iter(), Algorithm::RS256, Some("a")).err(),
            Some(NoKey::Algorithm)
        );
        let one = [hs(Some("a"))];
        assert!(select(one.iter(), Algorithm::HS256, None).is_ok());
        // A key without kid is not the key of a token that names one.
        let unnamed = [hs(None)];
        assert_eq!(
            select(unnamed.iter(), Algorithm::HS256, Some("a")).err(),
            Some(NoKey::UnknownKid)
        );
    }

    #[test]
    fn jwks_keeps_signing_keys_it_can_use() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "oct", "kid": "h2", "alg": "HS512", "k": "c2VjcmV0"},
            {"kty": "oct", "kid": "h3", "use": "enc", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird", "kid": "w"},
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = set.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("h1")]);
        let dup = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "oct", "kid": "h1", "k": "b3RoZXI"},
        ]});
        assert!(matches!(
            KeySet::from_jwks(dup.to_string().as_bytes()),
            Err(JwksError::DuplicateKid(_))
        ));
        assert!(KeySet::from_jwks(b"{\"keys\": 1}").is_err());
    }
}
