//! Authentication: verifying JWTs into an [`Identity`], and issuing them for
//! `switchboard token`.
//!
//! Only the algorithms whose keys are configured are accepted, and each
//! token is checked against a key of its own algorithm, chosen by `kid`
//! ([`crate::key_set`]), so a token signed with `none` or with an RSA
//! public key used as an HMAC secret is refused. The policy on top: `aud`
//! and `iss` required where configured, a longest lifetime, and no `crit`
//! header parameter, since none is understood here.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_core::ChannelName;
use thiserror::Error;
use wildmatch::WildMatch;

use crate::{
    config::AuthConfig,
    jwks::Jwks,
    key_set::{self, KeyError, KeySet, NoKey, read_pem},
};

/// Problems with the auth configuration, found at startup.
#[derive(Debug, Error)]
pub enum AuthSetupError {
    #[error(transparent)]
    Keys(#[from] KeyError),
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
    #[error("token key (kid) is not known")]
    UnknownKey,
    #[error("token has no key id (kid) and several keys fit")]
    KeyIdRequired,
    #[error("token has a critical header parameter (crit) that is not understood")]
    Critical,
    #[error("token lifetime is longer than the maximum")]
    Lifetime,
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

impl From<NoKey> for AuthError {
    fn from(e: NoKey) -> Self {
        match e {
            NoKey::Algorithm => AuthError::Algorithm,
            NoKey::UnknownKid => AuthError::UnknownKey,
            NoKey::Ambiguous => AuthError::KeyIdRequired,
        }
    }
}

/// What a token is checked for: [`Claims`] and `iat`.
#[derive(Deserialize)]
struct Checked {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
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
    keys: KeySet,
    jwks: Option<Arc<Jwks>>,
    leeway: Duration,
    max_lifetime: Duration,
    audience: Option<String>,
    issuer: Option<String>,
    pub allow_anonymous: bool,
}

impl Authenticator {
    /// The configured keys. A JWKS document is not read here: see
    /// [`Authenticator::jwks`].
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let jwks = Jwks::new(config)?.map(Arc::new);
        Ok(Self {
            keys: KeySet::from_config(config)?,
            jwks,
            leeway: config.leeway,
            max_lifetime: config.max_token_lifetime,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            allow_anonymous: config.allow_anonymous,
        })
    }

    /// The JWKS document, if one is configured, to load and keep fresh.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = token_header(token)?;
        let jwks = self.jwks.as_ref().map(|j| j.keys());
        let fetched = jwks.iter().flat_map(|set| set.iter());
        let key = key_set::select(
            self.keys.iter().chain(fetched),
            header.alg,
            header.kid.as_deref(),
        )?;
        let data = jsonwebtoken::decode::<Checked>(token, &key.key, &self.validation(key.alg))
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Algorithm
                }
                ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                _ => AuthError::Malformed,
            })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::NoSubject);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if !lifetime_allowed(claims.exp, claims.iat, now, self.max_lifetime, self.leeway) {
            return Err(AuthError::Lifetime);
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

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        // `aud` and `iss` are required when configured; otherwise a token
        // that carries them (most identity providers add them) is fine.
        validation.validate_aud = self.audience.is_some();
        if let Some(aud) = &self.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// The JOSE header of `token`, refused as [`Authenticator::verify`] refuses
/// it: malformed, an algorithm outside the supported ones, or any `crit`
/// parameter. Pure, so that it can be fuzzed (fuzz/token_header).
pub fn token_header(token: &str) -> Result<jsonwebtoken::Header, AuthError> {
    use jsonwebtoken::errors::ErrorKind;
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithmName | ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
        // An `alg` outside the crate's list (`none` above all) fails
        // header parsing; say so rather than "malformed".
        ErrorKind::Json(j) if j.to_string().contains("unknown variant") => AuthError::Algorithm,
        _ => AuthError::Malformed,
    })?;
    // RFC 7515 4.1.6: a `crit` extension the recipient does not
    // understand makes the token invalid, and none is understood here.
    if header.crit.is_some() {
        return Err(AuthError::Critical);
    }
    Ok(header)
}

/// Whether a token that expires at `exp` (and was issued at `iat`, if it
/// says) lives no longer than `max`: `exp - iat`, and `exp - now` (within
/// `leeway` of clock skew), so that neither a missing nor a back-dated
/// `iat` lets a token outlive the limit.
pub fn lifetime_allowed(
    exp: u64,
    iat: Option<u64>,
    now: u64,
    max: Duration,
    leeway: Duration,
) -> bool {
    let max = max.as_secs();
    let from_now = exp.saturating_sub(now) <= max.saturating_add(leeway.as_secs());
    let from_issue = iat.is_none_or(|iat| exp.saturating_sub(iat) <= max);
    from_now && from_issue
}

/// Signs tokens; used by `switchboard token`, the demo's guest tokens and
/// tests.
pub struct TokenIssuer {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl TokenIssuer {
    pub fn hmac(secret: &str) -> Self {
        Self::new(
            Algorithm::HS256,
            EncodingKey::from_secret(secret.as_bytes()),
        )
    }

    fn new(alg: Algorithm, key: EncodingKey) -> Self {
        Self {
            alg,
            key,
            kid: None,
            audience: None,
            issuer: None,
        }
    }

    /// An RS256 or ES256 issuer from a private key (PEM text or file path).
    pub fn private_key(alg: Algorithm, pem: &str) -> Result<Self, AuthSetupError> {
        let pem = read_pem(pem)?;
        let key = match alg {
            Algorithm::RS256 => {
                EncodingKey::from_rsa_pem(&pem).map_err(|source| KeyError::Key {
                    alg: "RS256",
                    source,
                })?
            }
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).map_err(|source| KeyError::Key {
                alg: "ES256",
                source,
            })?,
            _ => return Err(AuthSetupError::NoKey),
        };
        Ok(Self::new(alg, key))
    }

    /// Names the key in each token's `kid` header.
    pub fn with_kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    /// Adds the `aud` and `iss` that `config` requires to each token.
    pub fn for_config(mut self, config: &AuthConfig) -> Self {
        self.audience.clone_from(&config.audience);
        self.issuer.clone_from(&config.issuer);
        self
    }

    /// A token for `user`, issued now (`iat`) and valid for `ttl`, limited
    /// to `channels` if given.
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
        self.sign_with(&claims, Some(now.as_secs()))
    }

    /// `claims` as they are, with this issuer's `aud` and `iss` if set.
    pub fn sign(&self, claims: &Claims) -> String {
        self.sign_with(claims, None)
    }

    fn sign_with(&self, claims: &Claims, iat: Option<u64>) -> String {
        // Our own Claims struct always serializes to an object.
        let mut body = serde_json::to_value(claims).expect("claims serialize");
        if let Some(object) = body.as_object_mut() {
            let extra = [
                ("iat", iat.map(serde_json::Value::from)),
                ("aud", self.audience.clone().map(serde_json::Value::from)),
                ("iss", self.issuer.clone().map(serde_json::Value::from)),
            ];
            for (name, value) in extra {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
        }
        let mut header = Header::new(self.alg);
        header.kid.clone_from(&self.kid);
        // Signing JSON with a key that parsed cannot fail.
        jsonwebtoken::encode(&header, &body, &self.key).expect("token signs")
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
        // Within the longest lifetime.
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let with_aud = |aud: &str| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &serde_json::json!({"sub": "a", "exp": exp, "aud": aud, "iss": "idp"}),
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
        // Configured means required: a token without them is refused,
        // naming one of the two (jsonwebtoken checks them in no fixed order).
        let bare = TokenIssuer::hmac("s3cret").issue("a", Duration::from_secs(60), None);
        let refused = strict.verify(&bare).unwrap_err();
        assert!(
            [
                AuthError::MissingClaim("aud".into()),
                AuthError::MissingClaim("iss".into())
            ]
            .contains(&refused),
            "{refused:?}"
        );
        let config = AuthConfig {
            audience: Some("switchboard".into()),
            issuer: Some("idp".into()),
            ..Default::default()
        };
        let issued = TokenIssuer::hmac("s3cret").for_config(&config);
        assert!(
            strict
                .verify(&issued.issue("a", Duration::from_secs(60), None))
                .is_ok()
        );
    }

    #[test]
    fn lifetime_counts_from_issue_and_from_now() {
        let day = Duration::from_secs(86_400);
        let skew = Duration::from_secs(5);
        let now = 1_000_000;
        assert!(lifetime_allowed(now + 86_400, Some(now), now, day, skew));
        assert!(!lifetime_allowed(now + 86_401, Some(now), now, day, skew));
        // Without iat, from now, with the leeway for clock skew.
        assert!(lifetime_allowed(now + 86_405, None, now, day, skew));
        assert!(!lifetime_allowed(now + 86_406, None, now, day, skew));
        // An iat moved forward does not stretch the limit.
        assert!(!lifetime_allowed(
            now + 10 * 86_400,
            Some(now + 9 * 86_400),
            now,
            day,
            skew
        ));
        // Year 2286.
        assert!(!lifetime_allowed(9_999_999_999, None, now, day, skew));
    }

    #[test]
    fn crit_header_is_refused_and_kid_chooses_the_key() {
        let config = AuthConfig {
            keys: vec![
                crate::config::KeyConfig {
                    kid: "k1".into(),
                    alg: crate::config::KeyAlgorithm::HS256,
                    key: "one".into(),
                },
                crate::config::KeyConfig {
                    kid: "k2".into(),
                    alg: crate::config::KeyAlgorithm::HS256,
                    key: "two".into(),
                },
            ],
            ..Default::default()
        };
        let a = Authenticator::new(&config).unwrap();
        let t = |secret: &str, kid: Option<&str>| {
            let issuer = TokenIssuer::hmac(secret);
            match kid {
                Some(kid) => issuer.with_kid(kid),
                None => issuer,
            }
            .issue("u", Duration::from_secs(60), None)
        };
        assert!(a.verify(&t("one", Some("k1"))).is_ok());
        assert!(a.verify(&t("two", Some("k2"))).is_ok());
        assert_eq!(
            a.verify(&t("one", Some("k2"))).unwrap_err(),
            AuthError::BadSignature
        );
        assert_eq!(
            a.verify(&t("one", Some("k3"))).unwrap_err(),
            AuthError::UnknownKey
        );
        assert_eq!(
            a.verify(&t("one", None)).unwrap_err(),
            AuthError::KeyIdRequired
        );
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        header.crit = Some(vec!["exp".into()]);
        let crit = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "u", "exp": 9_999_999_999u64, "exp_": 1}),
            &EncodingKey::from_secret(b"one"),
        )
        .unwrap();
        assert_eq!(a.verify(&crit).unwrap_err(), AuthError::Critical);
    }
}
