//! The Pusher door in tests: an app's settings, the door's URL, channel
//! signatures as an app's auth endpoint makes them, and a raw client that
//! knows its socket id.

use std::net::SocketAddr;

use serde_json::{Value, json};
use switchboard_gateway::{
    Settings,
    pusher::{PusherApp, signature},
};

use crate::{client::Client, settings::ForTest};

pub const APP_ID: &str = "10";
pub const KEY: &str = "test-app-key";
pub const SECRET: &str = "test-app-secret";

/// The test app: client events on, Pusher's default limits.
pub fn app() -> PusherApp {
    PusherApp {
        id: APP_ID.into(),
        key: KEY.into(),
        secret: SECRET.into(),
        enable_client_messages: true,
        ..Default::default()
    }
}

/// [`Settings::for_test`] serving `apps`, with their namespaces.
pub fn settings(apps: Vec<PusherApp>) -> Settings {
    let mut s = Settings::for_test();
    s.pusher.apps = apps;
    s.namespaces.namespaces.extend(s.pusher.namespaces());
    s
}

/// The door's URL for `key`, with the query pusher-js sends.
pub fn url(addr: SocketAddr, key: &str) -> String {
    format!("ws://{addr}/app/{key}?protocol=7&client=js&version=8.4.0&flash=false")
}

/// `auth` for a subscription, as the app's auth endpoint returns it.
pub fn auth(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    let message = signature::channel_message(socket_id, channel, channel_data);
    format!("{KEY}:{}", signature::sign(SECRET, &message))
}

/// A raw client of the door that has its `connection_established`.
pub struct PusherClient {
    pub client: Client,
    pub socket_id: String,
    pub activity_timeout: u64,
}

impl PusherClient {
    pub async fn connect(addr: SocketAddr, key: &str) -> anyhow::Result<Self> {
        let mut client = Client::connect(&url(addr, key)).await?;
        let hello = client.next().await?;
        anyhow::ensure!(hello["event"] == "pusher:connection_established", "{hello}");
        let data: Value = serde_json::from_str(hello["data"].as_str().unwrap_or_default())?;
        Ok(Self {
            client,
            socket_id: data["socket_id"].as_str().unwrap_or_default().to_owned(),
            activity_timeout: data["activity_timeout"].as_u64().unwrap_or_default(),
        })
    }

    pub async fn send(
        &mut self,
        event: &str,
        channel: Option<&str>,
        data: Value,
    ) -> anyhow::Result<()> {
        let mut frame = json!({"event": event, "data": data});
        if let Some(channel) = channel {
            frame["channel"] = json!(channel);
        }
        self.client.send(frame).await
    }

    /// Sends `pusher:subscribe` (signed for private and presence
    /// channels) and returns the answer: `subscription_succeeded` or
    /// `subscription_error`.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        channel_data: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut data = json!({"channel": channel});
        let channel_data = channel_data.map(|d| d.to_string());
        if channel.starts_with("private-") || channel.starts_with("presence-") {
            data["auth"] = json!(auth(&self.socket_id, channel, channel_data.as_deref()));
        }
        if let Some(cd) = channel_data {
            data["channel_data"] = json!(cd);
        }
        self.send("pusher:subscribe", None, data).await?;
        self.answer(channel).await
    }

    /// The answer to a subscribe on `channel`.
    pub async fn answer(&mut self, channel: &str) -> anyhow::Result<Value> {
        self.client
            .wait_for(|f| {
                f["channel"] == channel
                    && (f["event"] == "pusher_internal:subscription_succeeded"
                        || f["event"] == "pusher:subscription_error")
            })
            .await
    }

    /// The next frame with `event` (on `channel`, if given).
    pub async fn event(&mut self, event: &str, channel: Option<&str>) -> anyhow::Result<Value> {
        self.client
            .wait_for(|f| f["event"] == event && channel.is_none_or(|c| f["channel"] == c))
            .await
    }
}

/// `path?query` of an HTTP API request signed as the server SDKs sign
/// it, with app `key` and `secret`, now.
pub fn signed_path(method: &str, path: &str, key: &str, secret: &str, body: &[u8]) -> String {
    use switchboard_gateway::pusher::request::{SignedRequest, body_md5, string_to_sign};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut query = vec![
        ("auth_key".to_owned(), key.to_owned()),
        ("auth_timestamp".to_owned(), now.to_string()),
        ("auth_version".to_owned(), "1.0".to_owned()),
    ];
    if !body.is_empty() {
        query.push(("body_md5".to_owned(), body_md5(body)));
    }
    let req = SignedRequest {
        method,
        path,
        query: &query,
        body,
    };
    let signature = signature::sign(secret, &string_to_sign(&req));
    query.push(("auth_signature".to_owned(), signature));
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{path}?{}", query.join("&"))
}

/// `POST /apps/{app_id}/events` on `addr`, signed with the app's
/// credentials; returns the status and body.
pub async fn trigger(
    addr: SocketAddr,
    (app_id, key, secret): (&str, &str, &str),
    body: &Value,
) -> anyhow::Result<crate::api::Reply> {
    let body = body.to_string().into_bytes();
    let path = signed_path(
        "POST",
        &format!("/apps/{app_id}/events"),
        key,
        secret,
        &body,
    );
    crate::api::Http::new(addr, None)
        .send(
            http::Method::POST,
            &path,
            &[("content-type", "application/json")],
            body,
        )
        .await
}

/// A config edit for [`crate::cluster::scenario_config_with`]: the dev
/// config's Pusher app sends its webhooks to `url`.
pub fn with_webhook(url: &str) -> impl FnOnce(String) -> String {
    let section = format!("\n[[pusher.apps.webhooks]]\nurl = \"{url}\"\n");
    move |config| {
        let anchor = "max_presence_user_info_bytes = 1024\n";
        assert!(
            config.contains(anchor),
            "config/dev.toml changed; update with_webhook"
        );
        config.replacen(anchor, &format!("{anchor}{section}"), 1)
    }
}
