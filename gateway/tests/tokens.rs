//! The token policy, over real sockets: `aud` and `iss` required where
//! configured, the longest lifetime, keys chosen by `kid` from the config
//! or a JWKS document (a file, or HTTPS with a CA made here, refreshed),
//! and `crit` refused.

mod common;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{Client, ForTest, Settings, TestServer, WAIT, issuer};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use switchboard_gateway::{
    KeyAlgorithm, KeyConfig,
    auth::{Claims, TokenIssuer},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};

const RS_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256.key.pem");
const ES_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/es256.key.pem");
const ES_PUB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/es256.pub.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Anonymous use off, so that every connection stands on its token.
fn closed_settings() -> Settings {
    let mut s = Settings::for_test();
    s.gateway.auth.allow_anonymous = false;
    s
}

/// An HS256 token with exactly these header fields and claims.
fn raw_token(secret: &str, kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn accepted(server: &TestServer, token: &str, user: &str) {
    let mut c = Client::connect(&format!("{}?token={token}", server.url()))
        .await
        .unwrap();
    let auth = c.next().await.unwrap();
    assert_eq!(
        (auth["type"].as_str(), auth["user_id"].as_str()),
        (Some("authenticated"), Some(user)),
        "{auth}"
    );
}

/// The token is refused with error 101 naming `expect`, and close 4001.
async fn refused(server: &TestServer, token: &str, expect: &str) {
    let mut c = server.client().await;
    c.send(json!({"type": "auth", "token": token}))
        .await
        .unwrap();
    let closed = c.closed().await.unwrap();
    assert_eq!(closed.code, Some(4001), "{expect}: {closed:?}");
    let err = closed.frames.iter().find(|f| f["type"] == "error").unwrap();
    assert_eq!(err["code"], 101, "{expect}: {err}");
    let text = err["error"].as_str().unwrap();
    assert!(text.contains(expect), "{text:?} lacks {expect:?}");
}

#[tokio::test]
async fn audience_and_issuer_are_required_when_configured() {
    let mut s = closed_settings();
    s.gateway.auth.audience = Some("switchboard".into());
    s.gateway.auth.issuer = Some("https://idp.test".into());
    let config = s.gateway.auth.clone();
    let server = TestServer::start(s).await;
    let exp = now() + 600;
    let with = |extra: Value| {
        let mut claims = json!({"sub": "ann", "exp": exp});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        raw_token(common::SECRET, None, claims)
    };
    accepted(
        &server,
        &with(json!({"aud": "switchboard", "iss": "https://idp.test"})),
        "ann",
    )
    .await;
    // An audience list that names us is fine too.
    accepted(
        &server,
        &with(json!({"aud": ["other", "switchboard"], "iss": "https://idp.test"})),
        "ann",
    )
    .await;
    let cases = [
        (
            json!({"aud": "other", "iss": "https://idp.test"}),
            "audience (aud) is not accepted",
        ),
        (json!({"iss": "https://idp.test"}), "missing the aud claim"),
        (
            json!({"aud": "switchboard", "iss": "https://evil.test"}),
            "issuer (iss) is not accepted",
        ),
        (json!({"aud": "switchboard"}), "missing the iss claim"),
    ];
    for (extra, expect) in cases {
        refused(&server, &with(extra), expect).await;
    }
    // What `switchboard token` and the demo issue carries both.
    let issued = issuer()
        .for_config(&config)
        .issue("bob", Duration::from_secs(60), None);
    accepted(&server, &issued, "bob").await;
}

#[tokio::test]
async fn tokens_living_longer_than_the_maximum_are_refused() {
    // The default maximum: 24 h.
    let server = TestServer::start(closed_settings()).await;
    let t = |claims: Value| raw_token(common::SECRET, None, claims);
    // Valid until the year 2286.
    refused(
        &server,
        &t(json!({"sub": "eve", "exp": 9_999_999_999u64})),
        "lifetime is longer than the maximum",
    )
    .await;
    refused(
        &server,
        &t(json!({"sub": "eve", "exp": now() + 25 * 3600, "iat": now()})),
        "lifetime",
    )
    .await;
    // A back-dated iat does not help: exp - iat counts.
    refused(
        &server,
        &t(json!({"sub": "eve", "exp": now() + 3600, "iat": now() - 24 * 3600})),
        "lifetime",
    )
    .await;
    accepted(
        &server,
        &t(json!({"sub": "ann", "exp": now() + 23 * 3600, "iat": now()})),
        "ann",
    )
    .await;
    accepted(
        &server,
        &t(json!({"sub": "ann", "exp": now() + 23 * 3600})),
        "ann",
    )
    .await;

    let mut s = closed_settings();
    s.gateway.auth.max_token_lifetime = Duration::from_secs(600);
    let strict = TestServer::start(s).await;
    refused(
        &strict,
        &issuer().issue("eve", Duration::from_secs(3600), None),
        "lifetime",
    )
    .await;
    accepted(
        &strict,
        &issuer().issue("ann", Duration::from_secs(300), None),
        "ann",
    )
    .await;
}

#[tokio::test]
async fn kid_chooses_among_several_keys_of_one_algorithm() {
    let mut s = closed_settings();
    // Rotation: the old and the new HS256 key side by side, one ES256 key.
    s.gateway.auth.hmac_secret = None;
    s.gateway.auth.keys = vec![
        key("2026-10", KeyAlgorithm::HS256, "old-secret"),
        key("2026-11", KeyAlgorithm::HS256, "new-secret"),
        key("es-1", KeyAlgorithm::ES256, ES_PUB),
    ];
    let server = TestServer::start(s).await;
    let hs = |secret: &str, kid: &str, user: &str| {
        TokenIssuer::hmac(secret)
            .with_kid(kid)
            .issue(user, Duration::from_secs(60), None)
    };
    accepted(&server, &hs("old-secret", "2026-10", "old"), "old").await;
    accepted(&server, &hs("new-secret", "2026-11", "new"), "new").await;
    refused(
        &server,
        &hs("new-secret", "2026-12", "eve"),
        "key (kid) is not known",
    )
    .await;
    // Each kid is held to its own key.
    refused(&server, &hs("new-secret", "2026-10", "eve"), "signature").await;
    // Without kid: refused where two keys fit, accepted where one does.
    let no_kid = TokenIssuer::hmac("new-secret").issue("eve", Duration::from_secs(60), None);
    refused(&server, &no_kid, "no key id (kid) and several keys fit").await;
    let es = TokenIssuer::private_key(Algorithm::ES256, ES_KEY).unwrap();
    accepted(
        &server,
        &es.issue("es", Duration::from_secs(60), None),
        "es",
    )
    .await;
    let es = es.with_kid("es-1");
    accepted(
        &server,
        &es.issue("es", Duration::from_secs(60), None),
        "es",
    )
    .await;
}

fn key(kid: &str, alg: KeyAlgorithm, key: &str) -> KeyConfig {
    KeyConfig {
        kid: kid.into(),
        alg,
        key: key.into(),
    }
}

#[tokio::test]
async fn unknown_crit_header_is_refused() {
    let server = TestServer::start(closed_settings()).await;
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    let crit = jsonwebtoken::encode(
        &header,
        &json!({"sub": "eve", "exp": now() + 60}),
        &EncodingKey::from_secret(common::SECRET.as_bytes()),
    )
    .unwrap();
    refused(&server, &crit, "critical header parameter (crit)").await;
    // The same token without crit is fine: only crit was wrong.
    let plain = issuer().sign(&Claims {
        sub: "ann".into(),
        exp: now() + 60,
        nbf: None,
        channels: None,
        info: None,
    });
    accepted(&server, &plain, "ann").await;
}

/// A JWK of a private key's public half (PEM file), named `kid`.
fn jwk(alg: Algorithm, pem: &str, kid: &str) -> Value {
    jwk_of(alg, &std::fs::read(pem).unwrap(), kid)
}

fn jwk_of(alg: Algorithm, pem: &[u8], kid: &str) -> Value {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
        _ => EncodingKey::from_ec_pem(pem).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

fn oct_jwk(secret: &str, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// A file in a directory of this test's own, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("switchboard-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn jwks_file_gives_keys_by_kid_and_is_bounded() {
    let rs = TokenIssuer::private_key(Algorithm::RS256, RS_KEY)
        .unwrap()
        .with_kid("rsa-1");
    let file = TempFile::new(
        "jwks.json",
        &jwks(&[
            jwk(Algorithm::RS256, RS_KEY, "rsa-1"),
            jwk(Algorithm::ES256, ES_KEY, "ec-1"),
            oct_jwk("jwks-secret", "hs-1"),
        ]),
    );
    let mut s = closed_settings();
    s.gateway.auth.jwks = Some(file.path());
    let server = TestServer::start(s).await;
    accepted(
        &server,
        &rs.issue("rsa", Duration::from_secs(60), None),
        "rsa",
    )
    .await;
    let es = TokenIssuer::private_key(Algorithm::ES256, ES_KEY)
        .unwrap()
        .with_kid("ec-1");
    accepted(
        &server,
        &es.issue("ec", Duration::from_secs(60), None),
        "ec",
    )
    .await;
    let hs = TokenIssuer::hmac("jwks-secret").with_kid("hs-1");
    accepted(
        &server,
        &hs.issue("hs", Duration::from_secs(60), None),
        "hs",
    )
    .await;
    // The config's HS256 key has no kid, and the document has another
    // HS256 key: a token without kid fits both, so it is refused.
    refused(
        &server,
        &common::token("plain"),
        "no key id (kid) and several keys fit",
    )
    .await;
    let unknown = TokenIssuer::private_key(Algorithm::RS256, RS_KEY)
        .unwrap()
        .with_kid("rsa-2");
    refused(
        &server,
        &unknown.issue("eve", Duration::from_secs(60), None),
        "key (kid) is not known",
    )
    .await;

    // A document over jwks_max_bytes is not taken: no keys from it, so
    // no RS256 key at all.
    let mut s = closed_settings();
    s.gateway.auth.jwks = Some(file.path());
    s.gateway.auth.jwks_max_bytes = 100;
    let bounded = TestServer::start(s).await;
    refused(
        &bounded,
        &rs.issue("rsa", Duration::from_secs(60), None),
        "algorithm is not accepted",
    )
    .await;

    // The file is read again every jwks_refresh: a key added to it arrives.
    let mut s = closed_settings();
    s.gateway.auth.jwks = Some(file.path());
    s.gateway.auth.jwks_refresh = Duration::from_millis(100);
    let fresh = TestServer::start(s).await;
    let added = TokenIssuer::hmac("added-secret").with_kid("hs-2").issue(
        "added",
        Duration::from_secs(60),
        None,
    );
    refused(&fresh, &added, "key (kid) is not known").await;
    std::fs::write(
        &file.0,
        jwks(&[
            jwk(Algorithm::RS256, RS_KEY, "rsa-1"),
            oct_jwk("added-secret", "hs-2"),
        ]),
    )
    .unwrap();
    until_verdict(&fresh, &added, true).await;
}

/// An HTTPS server with a certificate for 127.0.0.1 from a CA made here,
/// serving whatever JWKS document `doc` holds at any path.
struct JwksServer {
    url: String,
    ca: TempFile,
    doc: Arc<Mutex<String>>,
    served: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(doc: String) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let doc = Arc::new(Mutex::new(doc));
        let served = Arc::new(AtomicUsize::new(0));
        let (d, n) = (doc.clone(), served.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, doc, served) = (acceptor.clone(), d.clone(), n.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = doc.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                    served.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            url,
            ca: TempFile::new(&format!("ca-{}.pem", rand_suffix()), &ca.pem()),
            doc,
            served,
        }
    }
}

fn rand_suffix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Whether `token` is accepted now (one connection).
async fn is_accepted(server: &TestServer, token: &str) -> bool {
    let mut c = server.client().await;
    let reply = c
        .request(json!({"type": "auth", "token": token}))
        .await
        .unwrap();
    reply["type"] == "authenticated"
}

/// Polls until `token`'s verdict is `accept`, within the test kit's wait.
async fn until_verdict(server: &TestServer, token: &str, accept: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while is_accepted(server, token).await != accept {
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never became {}",
            if accept { "accepted" } else { "refused" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn jwks_over_https_is_verified_cached_and_refreshed() {
    // The provider's ES256 key now, and the one it rotates to, made here.
    let old = TokenIssuer::private_key(Algorithm::ES256, ES_KEY)
        .unwrap()
        .with_kid("ec-old");
    let new_pem = KeyPair::generate().unwrap().serialize_pem();
    let new = TokenIssuer::private_key(Algorithm::ES256, &new_pem)
        .unwrap()
        .with_kid("ec-new");
    let old_jwk = jwk(Algorithm::ES256, ES_KEY, "ec-old");
    let new_jwk = jwk_of(Algorithm::ES256, new_pem.as_bytes(), "ec-new");
    let idp = JwksServer::start(jwks(&[
        jwk(Algorithm::RS256, RS_KEY, "rsa-1"),
        old_jwk.clone(),
    ]))
    .await;
    let mut s = closed_settings();
    s.gateway.auth.jwks = Some(idp.url.clone());
    s.gateway.auth.jwks_ca = Some(idp.ca.path());
    s.gateway.auth.jwks_refresh = Duration::from_millis(200);
    let server = TestServer::start(s.clone()).await;
    // Read before serving: the first connection already has the keys.
    let old_token = || old.issue("old", Duration::from_secs(60), None);
    accepted(&server, &old_token(), "old").await;
    let rs = TokenIssuer::private_key(Algorithm::RS256, RS_KEY)
        .unwrap()
        .with_kid("rsa-1");
    accepted(
        &server,
        &rs.issue("rs", Duration::from_secs(60), None),
        "rs",
    )
    .await;
    let new_token = new.issue("new", Duration::from_secs(60), None);
    refused(&server, &new_token, "key (kid) is not known").await;

    // Rotation: the identity provider publishes the new key beside the
    // old; both are accepted once the gateway has read it again.
    *idp.doc.lock().unwrap() = jwks(&[old_jwk, new_jwk.clone()]);
    until_verdict(&server, &new_token, true).await;
    accepted(&server, &old_token(), "old").await;
    // Then it retires the old one.
    *idp.doc.lock().unwrap() = jwks(&[new_jwk]);
    until_verdict(&server, &old_token(), false).await;
    accepted(&server, &new_token, "new").await;
    // A broken document keeps the keys held.
    *idp.doc.lock().unwrap() = "not json".into();
    let served = idp.served.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + WAIT;
    while idp.served.load(Ordering::SeqCst) < served + 2 {
        assert!(tokio::time::Instant::now() < deadline, "no refresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    accepted(&server, &new_token, "new").await;

    // Without our CA the server's certificate is not trusted: no keys
    // from it (no ES256 key at all).
    s.gateway.auth.jwks_ca = None;
    let jwks = switchboard_gateway::jwks::Jwks::new(&s.gateway.auth)
        .unwrap()
        .unwrap();
    let err = jwks.load().await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
    let untrusting = TestServer::start(s).await;
    refused(&untrusting, &old_token(), "algorithm is not accepted").await;
}
