//! Pusher's HTTP API under `/apps/{id}/`: triggering events (one or
//! several channels, batches), channel and member queries, and ending a
//! signed-in user's connections. Every request is signed
//! ([`crate::pusher::request`]); events go through the brokers like any
//! publication, in an [`Envelope`] that carries the event name and the
//! excluded socket.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{Method, Uri},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};
use switchboard_core::{Broker, ChannelsRequest, PresenceRequest, PublishRequest, frame::data};

use crate::{
    api::admission::{self, Admission},
    gateway::Gateway,
    pusher::{
        AppState, Apps,
        api_error::PusherApiError,
        channel::{ChannelKind, PusherChannel, namespace},
        frame::Envelope,
        request::{self, RequestAuthError, SignedRequest},
        user::{TERMINATE, user_channel},
    },
};

/// Channels one trigger may name (Pusher's limit).
const MAX_TRIGGER_CHANNELS: usize = 100;
/// Events in one batch (Pusher's limit).
const MAX_BATCH: usize = 10;
/// Longest event name, in bytes.
const MAX_EVENT_NAME: usize = 200;
/// Channels one `GET /channels` lists at most.
const MAX_LISTED_CHANNELS: usize = 10_000;

type ApiState<B> = (Arc<Gateway<B>>, Arc<Apps>);
type Params = Query<Vec<(String, String)>>;
type Answer = Result<Json<Value>, PusherApiError>;

/// The API's routes, behind the server API's admission (`api.body_timeout`,
/// `api.max_concurrent_requests`, counted apart from the server API's).
pub(crate) fn router<B: Broker>(state: ApiState<B>) -> Router {
    let api = &state.0.settings.api;
    let admission = Arc::new(Admission::new(
        api.max_concurrent_requests,
        api.body_timeout,
    ));
    Router::new()
        .route("/apps/{id}/events", post(events::<B>))
        .route("/apps/{id}/batch_events", post(batch_events::<B>))
        .route("/apps/{id}/channels", get(channels::<B>))
        .route("/apps/{id}/channels/{name}", get(channel::<B>))
        .route("/apps/{id}/channels/{name}/users", get(users::<B>))
        .route(
            "/apps/{id}/users/{user}/terminate_connections",
            post(terminate::<B>),
        )
        // Where the Python SDK (3.3) sends it: the app is the signing key's.
        .route(
            "/users/{user}/terminate_connections",
            post(terminate_by_key::<B>),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            admission,
            admission::admit,
        ))
}

/// The app `id`, once the request's signature checks out.
fn authorize(
    apps: &Apps,
    id: &str,
    method: &Method,
    uri: &Uri,
    query: &[(String, String)],
    body: &[u8],
) -> Result<Arc<AppState>, PusherApiError> {
    let app = apps.by_id(id).ok_or(PusherApiError::UnknownApp)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let req = SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        query,
        body,
    };
    request::verify(&app.app.key, &app.app.secret, &req, now)?;
    Ok(app.clone())
}

#[derive(Deserialize)]
struct Trigger {
    name: String,
    data: Box<RawValue>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    /// `subscription_count`, `user_count`: attributes to answer with.
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize)]
struct Batch {
    batch: Vec<Trigger>,
}

#[derive(Default, Serialize)]
struct ChannelInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    occupied: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_count: Option<usize>,
}

/// Which attributes an `info` parameter asks for.
struct Wanted {
    subscription_count: bool,
    user_count: bool,
}

impl Wanted {
    fn parse(info: Option<&str>) -> Self {
        let asked = |a: &str| info.is_some_and(|i| i.split(',').any(|x| x.trim() == a));
        Self {
            subscription_count: asked("subscription_count"),
            user_count: asked("user_count"),
        }
    }

    fn any(&self) -> bool {
        self.subscription_count || self.user_count
    }
}

async fn events<B: Broker>(
    State((gw, apps)): State<ApiState<B>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    Query(query): Params,
    body: Bytes,
) -> Answer {
    let app = authorize(&apps, &id, &method, &uri, &query, &body)?;
    let trigger: Trigger = serde_json::from_slice(&body)
        .map_err(|e| PusherApiError::bad(format!("Invalid JSON: {e}")))?;
    let infos = publish(&gw, &app, trigger).await?;
    Ok(Json(match infos {
        Some(channels) => serde_json::json!({ "channels": channels }),
        None => serde_json::json!({}),
    }))
}

async fn batch_events<B: Broker>(
    State((gw, apps)): State<ApiState<B>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    Query(query): Params,
    body: Bytes,
) -> Answer {
    let app = authorize(&apps, &id, &method, &uri, &query, &body)?;
    let batch: Batch = serde_json::from_slice(&body)
        .map_err(|e| PusherApiError::bad(format!("Invalid JSON: {e}")))?;
    if batch.batch.len() > MAX_BATCH {
        return Err(PusherApiError::bad(format!(
            "Batch too large: at most {MAX_BATCH} events"
        )));
    }
    for t in &batch.batch {
        check(&app, t)?;
    }
    let mut infos = Vec::with_capacity(batch.batch.len());
    let mut any = false;
    for t in batch.batch {
        let info = publish(&gw, &app, t).await?;
        any |= info.is_some();
        // One channel per batch entry: its attributes, or nothing.
        infos.push(
            info.and_then(|m| m.into_values().next())
                .unwrap_or_default(),
        );
    }
    Ok(Json(if any {
        serde_json::json!({ "batch": infos })
    } else {
        serde_json::json!({})
    }))
}

/// The channels a trigger names, checked against the app's limits.
fn check(app: &AppState, t: &Trigger) -> Result<Vec<PusherChannel>, PusherApiError> {
    let names: Vec<&String> = match (&t.channels, &t.channel) {
        (Some(list), None) => list.iter().collect(),
        (None, Some(one)) => vec![one],
        _ => return Err(PusherApiError::bad("Give either channels or channel")),
    };
    if names.is_empty() || names.len() > MAX_TRIGGER_CHANNELS {
        return Err(PusherApiError::bad(format!(
            "Give 1 to {MAX_TRIGGER_CHANNELS} channels"
        )));
    }
    if t.name.is_empty() || t.name.len() > MAX_EVENT_NAME {
        return Err(PusherApiError::bad("Event name must be 1 to 200 bytes"));
    }
    let max = app.app.max_event_bytes;
    if t.data.get().len() > max {
        return Err(PusherApiError::TooLarge(format!(
            "Event data is larger than {max} bytes"
        )));
    }
    data::check(t.data.get()).map_err(|e| PusherApiError::bad(format!("Event {e}")))?;
    if let Some(s) = &t.socket_id
        && !valid_socket_id(s)
    {
        return Err(PusherApiError::bad("Invalid socket_id"));
    }
    names
        .into_iter()
        .map(|n| {
            PusherChannel::new(&app.app.id, n)
                .map_err(|e| PusherApiError::bad(format!("Invalid channel {n:?}: {e}")))
        })
        .collect()
}

fn valid_socket_id(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    s.split_once('.')
        .is_some_and(|(a, b)| digits(a) && digits(b))
}

/// Publishes one trigger to each of its channels; with `info`, answers
/// each channel's attributes.
async fn publish<B: Broker>(
    gw: &Gateway<B>,
    app: &AppState,
    t: Trigger,
) -> Result<Option<BTreeMap<String, ChannelInfo>>, PusherApiError> {
    let channels = check(app, &t)?;
    let data = Envelope {
        event: t.name.as_str().into(),
        data: &t.data,
        socket_id: t.socket_id.as_deref().map(Into::into),
        user_id: None,
    }
    .to_raw();
    for c in &channels {
        gw.broker
            .publish(PublishRequest {
                channel: c.native.clone(),
                from: String::new(),
                data: data.clone(),
                idempotency_key: None,
            })
            .await?;
    }
    let wanted = Wanted::parse(t.info.as_deref());
    if !wanted.any() {
        return Ok(None);
    }
    let mut infos = BTreeMap::new();
    for c in channels {
        let stats = gw.broker.presence_stats(&c.native).await?;
        let presence = c.kind == ChannelKind::Presence;
        infos.insert(
            c.name,
            ChannelInfo {
                occupied: None,
                subscription_count: wanted.subscription_count.then_some(stats.num_clients),
                user_count: (wanted.user_count && presence).then_some(stats.num_users),
            },
        );
    }
    Ok(Some(infos))
}

async fn channels<B: Broker>(
    State((gw, apps)): State<ApiState<B>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    Query(query): Params,
) -> Answer {
    let app = authorize(&apps, &id, &method, &uri, &query, &[])?;
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let prefix = param("filter_by_prefix").unwrap_or_default();
    let wanted = Wanted::parse(param("info"));
    if wanted.user_count && !prefix.starts_with("presence-") {
        return Err(PusherApiError::bad(
            "user_count is only for presence channels: filter_by_prefix=presence-",
        ));
    }
    let mut out = BTreeMap::new();
    let kinds = [ChannelKind::Public, ChannelKind::Presence];
    for (kind, cache) in kinds.into_iter().flat_map(|k| [(k, false), (k, true)]) {
        let ns = namespace(&app.app.id, kind, cache);
        let found = gw
            .broker
            .channels(ChannelsRequest {
                prefix: format!("{ns}:{prefix}"),
                limit: MAX_LISTED_CHANNELS,
            })
            .await?;
        for c in found {
            let Some(name) = PusherChannel::name_of(&app.app.id, &c.channel) else {
                continue;
            };
            let stats = c.presence;
            out.insert(
                name.to_owned(),
                ChannelInfo {
                    user_count: stats.filter(|_| wanted.user_count).map(|s| s.num_users),
                    subscription_count: stats
                        .filter(|_| wanted.subscription_count)
                        .map(|s| s.num_clients),
                    occupied: None,
                },
            );
        }
    }
    Ok(Json(serde_json::json!({ "channels": out })))
}

async fn channel<B: Broker>(
    State((gw, apps)): State<ApiState<B>>,
    Path((id, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    Query(query): Params,
) -> Answer {
    let app = authorize(&apps, &id, &method, &uri, &query, &[])?;
    let c = PusherChannel::new(&app.app.id, &name)
        .map_err(|e| PusherApiError::bad(format!("Invalid channel: {e}")))?;
    let info = query
        .iter()
        .find(|(k, _)| k == "info")
        .map(|(_, v)| v.as_str());
    let wanted = Wanted::parse(info);
    if wanted.user_count && c.kind != ChannelKind::Presence {
        return Err(PusherApiError::bad(
            "user_count is only for presence channels",
        ));
    }
    let stats = gw.broker.presence_stats(&c.native).await?;
    let info = ChannelInfo {
        occupied: Some(stats.num_clients > 0),
        subscription_count: wanted.subscription_count.then_some(stats.num_clients),
        user_count: wanted.user_count.then_some(stats.num_users),
    };
    Ok(Json(serde_json::to_value(info).expect("plain struct")))
}

async fn users<B: Broker>(
    State((gw, apps)): State<ApiState<B>>,
    Path((id, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    Query(query): Params,
) -> Answer {
    let app = authorize(&apps, &id, &method, &uri, &query, &[])?;
    let c = PusherChannel::new(&app.app.id, &name)
        .map_err(|e| PusherApiError::bad(format!("Invalid channel: {e}")))?;
    if c.kind != ChannelKind::Presence {
        return Err(PusherApiError::bad("Users are only for presence channels"));
    }
    let mut ids: Vec<String> = gw
        .broker
        .presence(PresenceRequest::first(c.native.clone()))
        .await?
        .clients
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    ids.sort();
    ids.dedup();
    let users: Vec<Value> = ids
        .into_iter()
        .map(|id| serde_json::json!({ "id": id }))
        .collect();
    Ok(Json(serde_json::json!({ "users": users })))
}

async fn terminate<B: Broker>(
    State((gw, apps)): State<ApiState<B>>,
    Path((id, user)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    Query(query): Params,
    body: Bytes,
) -> Answer {
    let app = authorize(&apps, &id, &method, &uri, &query, &body)?;
    terminate_user(&gw, &app, &user).await
}

async fn terminate_by_key<B: Broker>(
    State((gw, apps)): State<ApiState<B>>,
    Path(user): Path<String>,
    method: Method,
    uri: Uri,
    Query(query): Params,
    body: Bytes,
) -> Answer {
    let key = query
        .iter()
        .find(|(k, _)| k == "auth_key")
        .map(|(_, v)| v.as_str())
        .ok_or(RequestAuthError::Missing("auth_key"))?;
    let id = apps
        .by_key(key)
        .ok_or(PusherApiError::UnknownApp)?
        .app
        .id
        .clone();
    let app = authorize(&apps, &id, &method, &uri, &query, &body)?;
    terminate_user(&gw, &app, &user).await
}

/// Ends every connection signed in as `user`, on every gateway.
async fn terminate_user<B: Broker>(gw: &Gateway<B>, app: &AppState, user: &str) -> Answer {
    let channel =
        user_channel(&app.app.id, user).ok_or_else(|| PusherApiError::bad("Invalid user id"))?;
    let data = RawValue::from_string("null".into()).expect("valid JSON");
    let envelope = Envelope {
        event: TERMINATE.into(),
        data: &data,
        socket_id: None,
        user_id: None,
    };
    gw.broker
        .publish(PublishRequest {
            channel,
            from: String::new(),
            data: envelope.to_raw(),
            idempotency_key: None,
        })
        .await?;
    Ok(Json(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_are_two_numbers() {
        assert!(valid_socket_id("123.456"));
        for bad in ["123", "a.1", "1.", ".1", "1.2.3", ""] {
            assert!(!valid_socket_id(bad), "{bad}");
        }
    }

    #[test]
    fn info_lists_attributes() {
        let w = Wanted::parse(Some("user_count, subscription_count"));
        assert!(w.user_count && w.subscription_count);
        let w = Wanted::parse(Some("subscription_count"));
        assert!(!w.user_count && w.subscription_count && w.any());
        assert!(!Wanted::parse(None).any());
    }
}
