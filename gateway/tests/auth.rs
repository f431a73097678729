//! The three ways a token arrives, each algorithm, and every way a token
//! is refused.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, ForTest, SECRET, Settings, TestServer, issuer, token};
use jsonwebtoken::Algorithm;
use serde_json::json;
use switchboard_gateway::auth::{Claims, TokenIssuer};

const RS_PUB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256.pub.pem");
const RS_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256.key.pem");
const ES_PUB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/es256.pub.pem");
const ES_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/es256.key.pem");

async fn closed_server() -> TestServer {
    let mut s = Settings::for_test();
    s.gateway.auth.allow_anonymous = false;
    s.gateway.limits.auth_timeout = Duration::from_millis(300);
    s.gateway.auth.rsa_public_key = Some(RS_PUB.into());
    s.gateway.auth.ec_public_key = Some(std::fs::read_to_string(ES_PUB).unwrap());
    TestServer::start(s).await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn token_in_query_parameter() {
    let server = closed_server().await;
    let mut c = Client::connect(&format!("{}?token={}", server.url(), token("alice")))
        .await
        .unwrap();
    let auth = c.next().await.unwrap();
    assert_eq!(
        (auth["type"].as_str(), auth["user_id"].as_str()),
        (Some("authenticated"), Some("alice"))
    );
    assert!(auth["client_id"].as_str().is_some_and(|id| id.len() == 16));
    c.subscribe("chat:a").await.unwrap();
    c.publish("chat:a", json!(1)).await.unwrap();
    assert_eq!(c.message("chat:a").await.unwrap()["from"], "alice");
}

#[tokio::test]
async fn token_in_subprotocol_is_never_echoed() {
    let server = closed_server().await;
    let offered = format!("auth.{}", token("bob"));
    let mut c = Client::connect_with_protocols(&server.url(), &["switchboard", &offered])
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some("switchboard"));
    let auth = c.next().await.unwrap();
    assert_eq!(auth["user_id"], "bob");
    // Offering only the token protocol would make the browser fail the
    // handshake; the server says why, with an HTTP status.
    let err = Client::connect_with_protocols(&server.url(), &[&offered])
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("400"), "{err}");
}

#[tokio::test]
async fn token_in_first_message_with_each_algorithm() {
    let server = closed_server().await;
    let rs = TokenIssuer::private_key(Algorithm::RS256, RS_KEY).unwrap();
    let es = TokenIssuer::private_key(Algorithm::ES256, ES_KEY).unwrap();
    for (user, issuer) in [("hs", issuer()), ("rs", rs), ("es", es)] {
        let mut c = server.client().await;
        let t = issuer.issue(user, Duration::from_secs(60), None);
        let reply = c
            .request(json!({"type": "auth", "token": t}))
            .await
            .unwrap();
        assert_eq!(reply["type"], "authenticated", "{user}: {reply}");
        assert_eq!(reply["user_id"], user);
        c.subscribe("chat:x").await.unwrap();
        let again = c
            .request(json!({"type": "auth", "token": "x"}))
            .await
            .unwrap();
        assert_eq!(again["code"], 112);
    }
}

async fn assert_refused(url: &str, first: Option<serde_json::Value>, expect: &str) {
    assert_refused_with(url, first, expect, 101).await;
}

async fn assert_refused_with(url: &str, first: Option<serde_json::Value>, expect: &str, code: u64) {
    let mut c = Client::connect(url).await.unwrap();
    if let Some(frame) = first {
        c.send(frame).await.unwrap();
    }
    let closed = c.closed().await.unwrap();
    assert_eq!(closed.code, Some(4001), "{expect}: {closed:?}");
    let err = closed.frames.iter().find(|f| f["type"] == "error").unwrap();
    assert_eq!(err["code"], code, "{expect}: {err}");
    assert!(
        err["error"].as_str().unwrap().contains(expect),
        "{err} lacks {expect}"
    );
    let disconnect = closed.disconnect().unwrap();
    assert_eq!(
        (
            disconnect["code"].as_u64(),
            disconnect["reconnect"].as_bool()
        ),
        (Some(4001), Some(false))
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_4001() {
    let server = closed_server().await;
    let url = server.url();
    let wrong_key = TokenIssuer::hmac("not-the-secret").issue("eve", Duration::from_secs(60), None);
    assert_refused(&format!("{url}?token={wrong_key}"), None, "signature").await;
    let expired = issuer().sign(&Claims {
        sub: "eve".into(),
        exp: now() - 3600,
        nbf: None,
        channels: None,
        info: None,
    });
    assert_refused_with(
        &format!("{url}?token={expired}"),
        None,
        "token expired",
        109,
    )
    .await;
    let future = issuer().sign(&Claims {
        sub: "eve".into(),
        exp: now() + 7200,
        nbf: Some(now() + 3600),
        channels: None,
        info: None,
    });
    assert_refused(
        &url,
        Some(json!({"type": "auth", "token": future})),
        "not yet valid",
    )
    .await;
    // {"alg":"none"} with no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJldmUiLCJleHAiOjk5OTk5OTk5OTl9.";
    assert_refused(
        &url,
        Some(json!({"type": "auth", "token": none})),
        "algorithm",
    )
    .await;
    // The RSA public key used as an HMAC secret (key confusion).
    let confused = TokenIssuer::hmac(&std::fs::read_to_string(RS_PUB).unwrap()).issue(
        "eve",
        Duration::from_secs(60),
        None,
    );
    assert_refused(&format!("{url}?token={confused}"), None, "signature").await;
    assert_refused(
        &url,
        Some(json!({"type": "auth", "token": "garbage"})),
        "malformed",
    )
    .await;
    let no_sub = issuer().sign(&Claims {
        sub: String::new(),
        exp: now() + 60,
        nbf: None,
        channels: None,
        info: None,
    });
    assert_refused(
        &url,
        Some(json!({"type": "auth", "token": no_sub})),
        "no user",
    )
    .await;
    // No token where anonymous use is off.
    assert_refused(
        &url,
        Some(json!({"type": "subscribe", "channel": "a"})),
        "token is required",
    )
    .await;
}

#[tokio::test]
async fn auth_timeout_closes_with_4002() {
    let server = closed_server().await;
    let c = server.client().await;
    let closed = c.closed().await.unwrap();
    assert_eq!(closed.code, Some(4002));
    assert_eq!(closed.reason, "auth timeout");
}

#[tokio::test]
async fn refresh_replaces_the_token_of_the_same_user_only() {
    let server = closed_server().await;
    let mut c = Client::connect(&format!("{}?token={}", server.url(), token("alice")))
        .await
        .unwrap();
    c.next().await.unwrap();
    c.ok(json!({"type": "refresh", "token": token("alice")}))
        .await
        .unwrap();
    let other = c
        .request(json!({"type": "refresh", "token": token("mallory")}))
        .await
        .unwrap();
    assert_eq!(other["code"], 101);
    let bad = c
        .request(json!({"type": "refresh", "token": "nope"}))
        .await
        .unwrap();
    assert_eq!(bad["code"], 101);
    // Still alive and still alice.
    c.subscribe("chat:r").await.unwrap();
    c.publish("chat:r", json!(1)).await.unwrap();
    assert_eq!(c.message("chat:r").await.unwrap()["from"], "alice");
}

#[tokio::test]
async fn expiring_token_ends_the_connection_unless_refreshed() {
    let server = closed_server().await;
    let short = |secs| {
        issuer().sign(&Claims {
            sub: "sam".into(),
            exp: now() + secs,
            nbf: None,
            channels: None,
            info: None,
        })
    };
    // Refreshed in time: survives past the first expiry.
    let mut kept = Client::connect(&format!("{}?token={}", server.url(), short(1)))
        .await
        .unwrap();
    kept.next().await.unwrap();
    kept.ok(json!({"type": "refresh", "token": short(30)}))
        .await
        .unwrap();
    // Not refreshed: told to reconnect with a new token.
    let mut c = Client::connect(&format!("{}?token={}", server.url(), short(1)))
        .await
        .unwrap();
    c.next().await.unwrap();
    let closed = c.closed().await.unwrap();
    assert_eq!(closed.code, Some(4003));
    let d = closed.disconnect().unwrap();
    assert_eq!(
        (d["reason"].as_str(), d["reconnect"].as_bool()),
        (Some("token expired"), Some(true))
    );
    // The refreshed one outlived it.
    let pong = kept.request(json!({"type": "ping"})).await.unwrap();
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn anonymous_connections_when_allowed() {
    let server = TestServer::dev().await;
    let mut c = server.client().await;
    c.subscribe("chat:anon").await.unwrap();
    c.publish("chat:anon", json!("hi")).await.unwrap();
    assert_eq!(c.message("chat:anon").await.unwrap()["from"], "");
    // A bad token is still refused, even where anonymous use is allowed.
    let bad = TokenIssuer::hmac("wrong").issue("x", Duration::from_secs(60), None);
    assert_refused(&format!("{}?token={bad}", server.url()), None, "signature").await;
    let _ = SECRET;
}
