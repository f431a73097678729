//! Authentication: verifying JWTs into an [`Identity`], and issuing them for
//! `switchboard token`.
//!
//! Only the algorithms whose keys are configured are accepted, and each
//! token is checked against the key of its own algorithm, so a token signed
//! with `none` or with an RSA public key used as an HMAC secret is refused.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_core::ChannelName;
use thiserror::Error;
use wildmatch::WildMatch;

use crate::config::AuthConfig;

/// Problems with the auth configuration, found at startup.
#[derive(Debug, Error)]
pub enum AuthSetupError {
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
    #[error("no signing key: set auth.hmac_secret or pass a private key")]
    NoKey,
}

/// Why a token was refused. The text goes to the client, so it names the
/// problem without echoing the token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm is not accepted")]
    Algorithm,
    #[error("token is malformed")]
    Malformed,
    #[error("token has no user (sub)")]
    NoSubject,
    #[error("token is missing the {0} claim")]
    MissingClaim(String),
    #[error("a token is required")]
    Required,
    #[error("token belongs to another user")]
    OtherUser,
    #[error("token audience (aud) is not accepted")]
    Audience,
    #[error("token issuer (iss) is not accepted")]
    Issuer,
}

/// The claims Switchboard reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    // Defaults let the validator, not deserialization, report a missing
    // `sub` or `exp` by name.
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Glob patterns (`*`, `?`) of channels the user may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Shown to other clients in presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
}

/// Who is on a connection.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `""` for anonymous connections.
    pub user_id: String,
    pub expires_at: Option<SystemTime>,
    channels: Option<Vec<WildMatch>>,
    pub info: Option<Box<RawValue>>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            user_id: String::new(),
            expires_at: None,
            channels: None,
            info: None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.user_id.is_empty()
    }

    /// Whether the token's `channels` claim allows `channel`. Without the
    /// claim, only `require_claim` namespaces are closed.
    pub fn claim_allows(&self, channel: &ChannelName, require_claim: bool) -> bool {
        match &self.channels {
            Some(patterns) => patterns.iter().any(|p| p.matches(channel.as_str())),
            None => !require_claim,
        }
    }
}

pub struct Authenticator {
    keys: Vec<(Algorithm, DecodingKey)>,
    leeway: Duration,
    audience: Option<String>,
    issuer: Option<String>,
    pub allow_anonymous: bool,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hmac_secret {
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(pem) = &config.rsa_public_key {
            let key = DecodingKey::from_rsa_pem(&read_pem(pem)?).map_err(|source| {
                AuthSetupError::Key {
                    alg: "RS256",
                    source,
                }
            })?;
            keys.push((Algorithm::RS256, key));
        }
        if let Some(pem) = &config.ec_public_key {
            let key = DecodingKey::from_ec_pem(&read_pem(pem)?).map_err(|source| {
                AuthSetupError::Key {
                    alg: "ES256",
                    source,
                }
            })?;
            keys.push((Algorithm::ES256, key));
        }
        Ok(Self {
            keys,
            leeway: config.leeway,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            allow_anonymous: config.allow_anonymous,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
            // An `alg` outside the crate's list (`none` above all) fails
            // header parsing; say so rather than "malformed".
            ErrorKind::Json(j) if j.to_string().contains("unknown variant") => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
        let (alg, key) = self
            .keys
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .ok_or(AuthError::Algorithm)?;
        let mut validation = Validation::new(*alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // `aud` and `iss` are checked when configured; otherwise a token
        // that carries them (most identity providers add them) is fine.
        validation.validate_aud = self.audience.is_some();
        if let Some(aud) = &self.audience {
            validation.set_audience(&[aud]);
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
            ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::NoSubject);
        }
        Ok(Identity {
            user_id: claims.sub,
            // The same leeway that admitted the token keeps it alive, or a
            // token accepted within the leeway would be cut off at once.
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(claims.exp) + self.leeway),
            channels: claims
                .channels
                .map(|c| c.iter().map(|p| WildMatch::new(p)).collect()),
            info: claims.info,
        })
    }
}

fn read_pem(value: &str) -> Result<Vec<u8>, AuthSetupError> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(Path::new(value)).map_err(|source| AuthSetupError::KeyFile {
        path: value.to_owned(),
        source,
    })
}

/// Signs tokens; used by `switchboard token` and by tests.
pub struct TokenIssuer {
    alg: Algorithm,
    key: EncodingKey,
}

impl TokenIssuer {
    pub fn hmac(secret: &str) -> Self {
        Self {
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// An RS256 or ES256 issuer from a private key (PEM text or file path).
    pub fn private_key(alg: Algorithm, pem: &str) -> Result<Self, AuthSetupError> {
        let pem = read_pem(pem)?;
        let key = match alg {
            Algorithm::RS256 => {
                EncodingKey::from_rsa_pem(&pem).map_err(|source| AuthSetupError::Key {
                    alg: "RS256",
                    source,
                })?
            }
            Algorithm::ES256 => {
                EncodingKey::from_ec_pem(&pem).map_err(|source| AuthSetupError::Key {
                    alg: "ES256",
                    source,
                })?
            }
            _ => return Err(AuthSetupError::NoKey),
        };
        Ok(Self { alg, key })
    }

    /// A token for `user`, valid for `ttl`, limited to `channels` if given.
    pub fn issue(&self, user: &str, ttl: Duration, channels: Option<Vec<String>>) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            sub: user.to_owned(),
            exp: (now + ttl).as_secs(),
            nbf: None,
            channels,
            info: None,
        };
        self.sign(&claims)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        // Signing our own Claims struct with a key that parsed cannot fail.
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.key).expect("token signs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            hmac_secret: Some("s3cret".into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn hs256_round_trip_and_claims() {
        let t = TokenIssuer::hmac("s3cret").issue(
            "alice",
            Duration::from_secs(60),
            Some(vec!["chat:*".into()]),
        );
        let id = auth().verify(&t).unwrap();
        assert_eq!(id.user_id, "alice");
        assert!(id.claim_allows(&ChannelName::new("chat:1").unwrap(), true));
        assert!(!id.claim_allows(&ChannelName::new("news:1").unwrap(), false));
    }

    #[test]
    fn refuses_bad_tokens() {
        let a = auth();
        assert_eq!(a.verify("nonsense").unwrap_err(), AuthError::Malformed);
        let wrong = TokenIssuer::hmac("other").issue("alice", Duration::from_secs(60), None);
        assert_eq!(a.verify(&wrong).unwrap_err(), AuthError::BadSignature);
        let expired = TokenIssuer::hmac("s3cret").sign(&Claims {
            sub: "a".into(),
            exp: 1_000_000,
            nbf: None,
            channels: None,
            info: None,
        });
        assert_eq!(a.verify(&expired).unwrap_err(), AuthError::Expired);
        // {"alg":"none","typ":"JWT"}.{"sub":"a","exp":9999999999}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert_eq!(a.verify(none).unwrap_err(), AuthError::Algorithm);
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a"}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(
            a.verify(&no_exp).unwrap_err(),
            AuthError::MissingClaim("exp".into())
        );
    }

    #[test]
    fn audience_and_issuer_only_when_configured() {
        let with_aud = |aud: &str| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &serde_json::json!({"sub": "a", "exp": 9_999_999_999u64, "aud": aud, "iss": "idp"}),
                &EncodingKey::from_secret(b"s3cret"),
            )
            .unwrap()
        };
        assert!(auth().verify(&with_aud("anything")).is_ok());
        let strict = Authenticator::new(&AuthConfig {
            hmac_secret: Some("s3cret".into()),
            audience: Some("switchboard".into()),
            issuer: Some("idp".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(strict.verify(&with_aud("switchboard")).is_ok());
        assert_eq!(
            strict.verify(&with_aud("other")).unwrap_err(),
            AuthError::Audience
        );
    }
}
