//! The demo chat at `/`: a page written with the JavaScript client, the
//! client's own module files, and guest tokens that put names in presence.
//! Everything is embedded in the binary, so `switchboard dev` from a fresh
//! clone serves it with no files around and no build step.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::Query,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    auth::{Claims, TokenIssuer},
    config::AuthConfig,
};

/// Files served as they are: (path, content type, body).
const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../clients/js/demo/index.html")),
    (
        "/demo/chat.js",
        JS,
        include_str!("../../clients/js/demo/chat.js"),
    ),
    (
        "/client/switchboard.js",
        JS,
        include_str!("../../clients/js/switchboard.js"),
    ),
    (
        "/client/switchboard.d.ts",
        TS,
        include_str!("../../clients/js/switchboard.d.ts"),
    ),
    (
        "/client/src/advice.js",
        JS,
        include_str!("../../clients/js/src/advice.js"),
    ),
    (
        "/client/src/backoff.js",
        JS,
        include_str!("../../clients/js/src/backoff.js"),
    ),
    (
        "/client/src/client.js",
        JS,
        include_str!("../../clients/js/src/client.js"),
    ),
    (
        "/client/src/emitter.js",
        JS,
        include_str!("../../clients/js/src/emitter.js"),
    ),
    (
        "/client/src/errors.js",
        JS,
        include_str!("../../clients/js/src/errors.js"),
    ),
    (
        "/client/src/subscription.js",
        JS,
        include_str!("../../clients/js/src/subscription.js"),
    ),
    (
        "/client/src/token.js",
        JS,
        include_str!("../../clients/js/src/token.js"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const TS: &str = "text/plain; charset=utf-8";

/// Guest tokens may use only these channels: the demo's rooms.
const GUEST_CHANNELS: &str = "demo:*";

/// Long enough for a visit; the page's token callback renews it.
const GUEST_TTL: Duration = Duration::from_secs(600);

/// Longest display name, in characters.
const MAX_NAME: usize = 32;

/// The demo's routes. `/demo/token` exists only where a guest token grants
/// nothing an anonymous client lacks: anonymous use is allowed and the
/// server signs HS256 tokens.
pub fn router(auth: &AuthConfig) -> Router {
    let mut router = Router::new();
    for &(path, content_type, body) in FILES {
        router = router.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        // Always revalidate: a rebuilt server may serve a new client.
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    body,
                )
            }),
        );
    }
    if auth.allow_anonymous
        && let Some(secret) = auth.hmac_secret.clone()
    {
        let issuer = Arc::new(TokenIssuer::hmac(&secret).for_config(auth));
        router = router.route(
            "/demo/token",
            get(move |query: Query<TokenQuery>| async move { guest_token(&issuer, &query.name) }),
        );
    }
    router
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    name: String,
}

fn guest_token(issuer: &TokenIssuer, name: &str) -> Response {
    let (token, user_id) = issue_guest(issuer, name);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "token": token, "user_id": user_id })),
    )
        .into_response()
}

/// A token for a fresh random user whose presence `info` carries `name`,
/// limited to the demo's channels; returns it with the user id. The id is
/// random so that a guest can never pass for a real user.
fn issue_guest(issuer: &TokenIssuer, name: &str) -> (String, String) {
    let name: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    let name = match name.trim() {
        "" => "guest",
        trimmed => trimmed,
    };
    let user = format!("guest-{:016x}", rand::random::<u64>());
    let info = serde_json::json!({ "name": name }).to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let token = issuer.sign(&Claims {
        sub: user.clone(),
        exp: (now + GUEST_TTL).as_secs(),
        nbf: None,
        channels: Some(vec![GUEST_CHANNELS.to_owned()]),
        // A JSON object we just encoded is valid raw JSON.
        info: RawValue::from_string(info).ok(),
    });
    (token, user)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use switchboard_core::ChannelName;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::Authenticator;

    async fn get(router: &Router, path: &str) -> (u16, String, String) {
        let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let res = router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let kind = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, kind, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_the_page_and_client_and_gates_guest_tokens() {
        let open = AuthConfig {
            allow_anonymous: true,
            hmac_secret: Some("s".into()),
            ..Default::default()
        };
        let routes = router(&open);
        let (status, kind, body) = get(&routes, "/").await;
        assert_eq!((status, kind.as_str()), (200, HTML));
        assert!(body.contains("/demo/chat.js"));
        let (status, kind, body) = get(&routes, "/client/switchboard.js").await;
        assert_eq!((status, kind.as_str()), (200, JS));
        assert!(body.contains("./src/client.js"));
        let (status, _, body) = get(&routes, "/demo/token?name=Ann").await;
        assert_eq!(status, 200);
        assert!(body.contains("\"user_id\":\"guest-"));

        // A guest token would be more than an anonymous client may have.
        let closed = AuthConfig {
            allow_anonymous: false,
            hmac_secret: Some("s".into()),
            ..Default::default()
        };
        assert_eq!(get(&router(&closed), "/demo/token").await.0, 404);
        assert_eq!(get(&router(&closed), "/").await.0, 200);
        assert_eq!(
            get(&router(&AuthConfig::default()), "/demo/token").await.0,
            404
        );
    }

    #[test]
    fn guest_tokens_are_random_users_limited_to_demo_channels() {
        let auth = Authenticator::new(&AuthConfig {
            hmac_secret: Some("s".into()),
            ..Default::default()
        })
        .unwrap();
        let (token, user) = issue_guest(&TokenIssuer::hmac("s"), " Alice\u{7}  ");
        let id = auth.verify(&token).unwrap();
        assert_eq!(id.user_id, user);
        assert!(user.starts_with("guest-"));
        assert_eq!(id.info.as_deref().unwrap().get(), r#"{"name":"Alice"}"#);
        assert!(id.claim_allows(&ChannelName::new("demo:lobby").unwrap(), false));
        assert!(!id.claim_allows(&ChannelName::new("chat:lobby").unwrap(), false));
        assert_ne!(user, issue_guest(&TokenIssuer::hmac("s"), "Alice").1);

        let (long, _) = issue_guest(&TokenIssuer::hmac("s"), &"n".repeat(100));
        let info = auth.verify(&long).unwrap().info.unwrap();
        assert_eq!(
            info.get(),
            format!(r#"{{"name":"{}"}}"#, "n".repeat(MAX_NAME))
        );
        let (blank, _) = issue_guest(&TokenIssuer::hmac("s"), "   ");
        let info = auth.verify(&blank).unwrap().info.unwrap();
        assert_eq!(info.get(), r#"{"name":"guest"}"#);
    }
}
