//! The gRPC face of the server API (`switchboard.api.v1.Api`, in
//! proto/proto/switchboard/api/v1/api.proto): each call converts its message
//! into the same parameters the HTTP API uses and calls the same operation.

use std::convert::Infallible;

use axum::Router;
use serde_json::value::RawValue;
use switchboard_core::{Broker, Position};
use switchboard_proto::api::v1::{
    self as pb,
    api_server::{Api, ApiServer},
};
use tonic::{Request, Response, Status, service::interceptor::InterceptedService};
use tower::ServiceExt;

use super::{
    error::ApiError,
    key::ApiKeys,
    ops::{Operations, observe},
    params,
};

/// The service's route prefix, `/switchboard.api.v1.Api/`.
pub const SERVICE: &str = switchboard_proto::api::v1::api_server::SERVICE_NAME;

/// The gRPC service, bound to one gateway's operations.
pub struct GrpcApi<B: Broker> {
    ops: Operations<B>,
}

/// The gRPC routes, behind the API key check, for merging into the router
/// that also serves the HTTP API.
pub fn routes<B: Broker>(ops: Operations<B>, keys: ApiKeys, max_message_bytes: usize) -> Router {
    let server = ApiServer::new(GrpcApi { ops }).max_decoding_message_size(max_message_bytes);
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        keys.check(header)
            .map_err(|e| Status::from(observe::<()>("auth", Err(e)).unwrap_err()))?;
        Ok(req)
    };
    let service = InterceptedService::new(server, check)
        .map_request(|req: http::Request<axum::body::Body>| req.map(tonic::body::Body::new))
        .map_err(|e: Infallible| match e {});
    Router::new().route_service(&format!("/{SERVICE}/{{*call}}"), service)
}

fn data(json: String) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(json)
        .map_err(|e| ApiError::BadRequest(format!("data_json is not valid JSON: {e}")))
}

fn position(p: Position) -> pb::Position {
    pb::Position {
        offset: p.offset,
        epoch: p.epoch,
    }
}

fn usize_of(n: Option<u64>) -> Option<usize> {
    // Out-of-range values become the largest: the operation refuses them
    // with its own message.
    n.map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Runs one call: counted and logged like HTTP calls, errors mapped once.
async fn call<T>(
    name: &'static str,
    result: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    observe(name, result.await)
        .map(Response::new)
        .map_err(Status::from)
}

#[tonic::async_trait]
impl<B: Broker> Api for GrpcApi<B> {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReply>, Status> {
        let r = req.into_inner();
        call("publish", async {
            let p = params::PublishParams {
                channel: r.channel,
                data: data(r.data_json)?,
                idempotency_key: r.idempotency_key,
            };
            let res = self.ops.publish(p).await?;
            Ok(pb::PublishReply {
                position: Some(pb::Position {
                    offset: res.offset,
                    epoch: res.epoch,
                }),
            })
        })
        .await
    }

    async fn broadcast(
        &self,
        req: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastReply>, Status> {
        let r = req.into_inner();
        call("broadcast", async {
            let p = params::BroadcastParams {
                channels: r.channels,
                data: data(r.data_json)?,
                idempotency_key: r.idempotency_key,
            };
            let res = self.ops.broadcast(p).await?;
            Ok(pb::BroadcastReply {
                results: res
                    .results
                    .into_iter()
                    .map(|o| pb::BroadcastResult {
                        channel: o.channel,
                        position: o
                            .offset
                            .zip(o.epoch)
                            .map(|(offset, epoch)| pb::Position { offset, epoch }),
                        error_code: o.error.as_ref().map(|e| e.code.to_owned()),
                        error_message: o.error.map(|e| e.message),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn send_to_user(
        &self,
        req: Request<pb::SendToUserRequest>,
    ) -> Result<Response<pb::PublishReply>, Status> {
        let r = req.into_inner();
        call("send_to_user", async {
            let p = params::SendToUserParams {
                user: r.user,
                data: data(r.data_json)?,
                idempotency_key: r.idempotency_key,
            };
            let res = self.ops.send_to_user(p).await?;
            Ok(pb::PublishReply {
                position: Some(pb::Position {
                    offset: res.offset,
                    epoch: res.epoch,
                }),
            })
        })
        .await
    }

    async fn disconnect_user(
        &self,
        req: Request<pb::DisconnectUserRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        call("disconnect_user", async {
            let code = match r.code {
                None => None,
                Some(c) => Some(u16::try_from(c).map_err(|_| {
                    ApiError::BadRequest(format!(
                        "code must be a WebSocket close code for applications, 3000 to 4999 (got {c})"
                    ))
                })?),
            };
            let p = params::DisconnectUserParams {
                user: r.user,
                code,
                reason: r.reason,
                reconnect: r.reconnect,
            };
            self.ops.disconnect_user(p).await?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn unsubscribe_user(
        &self,
        req: Request<pb::UnsubscribeUserRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        call("unsubscribe_user", async {
            let p = params::UnsubscribeUserParams {
                user: r.user,
                channel: r.channel,
            };
            self.ops.unsubscribe_user(p).await?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn presence(
        &self,
        req: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceReply>, Status> {
        let r = req.into_inner();
        call("presence", async {
            let res = self
                .ops
                .presence(params::PresenceParams {
                    channel: r.channel,
                    cursor: r.cursor,
                    limit: r.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
                })
                .await?;
            Ok(pb::PresenceReply {
                channel: res.channel,
                clients: res
                    .clients
                    .into_iter()
                    .map(|c| pb::ClientInfo {
                        client_id: c.client_id,
                        user_id: c.user_id,
                        info_json: c.info.map(|i| i.get().to_owned()),
                    })
                    .collect(),
                next_cursor: res.next_cursor,
            })
        })
        .await
    }

    async fn presence_stats(
        &self,
        req: Request<pb::ChannelRequest>,
    ) -> Result<Response<pb::PresenceStatsReply>, Status> {
        let r = req.into_inner();
        call("presence_stats", async {
            let res = self
                .ops
                .presence_stats(params::ChannelParams { channel: r.channel })
                .await?;
            Ok(pb::PresenceStatsReply {
                channel: res.channel,
                num_clients: res.num_clients as u64,
                num_users: res.num_users as u64,
            })
        })
        .await
    }

    async fn user_online(
        &self,
        req: Request<pb::UserRequest>,
    ) -> Result<Response<pb::UserOnlineReply>, Status> {
        let r = req.into_inner();
        call("user_online", async {
            let res = self
                .ops
                .user_online(params::UserParams { user: r.user })
                .await?;
            Ok(pb::UserOnlineReply {
                user: res.user,
                online: res.online,
                num_clients: res.num_clients as u64,
            })
        })
        .await
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        let r = req.into_inner();
        call("history", async {
            let p = params::HistoryParams {
                channel: r.channel,
                limit: usize_of(r.limit),
                since: r.since.map(|s| Position {
                    offset: s.offset,
                    epoch: s.epoch,
                }),
                reverse: Some(r.reverse),
            };
            let res = self.ops.history(p).await?;
            Ok(pb::HistoryReply {
                channel: res.channel,
                position: Some(position(Position {
                    offset: res.offset,
                    epoch: res.epoch,
                })),
                publications: res
                    .publications
                    .into_iter()
                    .map(|p| pb::Publication {
                        from: p.from,
                        data_json: p.data.get().to_owned(),
                        offset: p.offset,
                        epoch: p.epoch,
                        timestamp: p.timestamp,
                    })
                    .collect(),
                complete: res.complete,
            })
        })
        .await
    }

    async fn channels(
        &self,
        req: Request<pb::ChannelsRequest>,
    ) -> Result<Response<pb::ChannelsReply>, Status> {
        let r = req.into_inner();
        call("channels", async {
            let p = params::ChannelsParams {
                prefix: Some(r.prefix),
                limit: usize_of(r.limit),
            };
            let res = self.ops.channels(p).await?;
            Ok(pb::ChannelsReply {
                channels: res
                    .channels
                    .into_iter()
                    .map(|c| pb::ChannelSummary {
                        channel: c.channel,
                        num_clients: c.num_clients.map(|n| n as u64),
                        num_users: c.num_users.map(|n| n as u64),
                    })
                    .collect(),
                truncated: res.truncated,
            })
        })
        .await
    }

    async fn info(&self, _: Request<pb::Empty>) -> Result<Response<pb::InfoReply>, Status> {
        call("info", async {
            let res = self.ops.info(params::InfoParams {}).await?;
            Ok(pb::InfoReply {
                gateway: Some(pb::GatewayInfo {
                    name: res.gateway.name,
                    version: res.gateway.version,
                    uptime_seconds: res.gateway.uptime_seconds,
                    connections: res.gateway.connections as u64,
                    channels: res.gateway.channels as u64,
                }),
                nodes: res
                    .nodes
                    .into_iter()
                    .map(|n| pb::NodeInfo {
                        name: n.name,
                        version: n.version,
                        uptime_seconds: n.uptime_seconds,
                        num_channels: n.num_channels as u64,
                        num_active_channels: n.num_active_channels as u64,
                        num_gateways: n.num_gateways as u64,
                        num_clients: n.num_clients as u64,
                        num_publications: n.num_publications,
                    })
                    .collect(),
            })
        })
        .await
    }
}
