//! Clients of the server API, for tests: JSON over real HTTP/1.1 sockets
//! (hyper's client) and the generated gRPC client (tonic), both sending
//! `Authorization: apikey <key>` when given a key.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use switchboard_proto::api::v1::api_client::ApiClient;
use tonic::{
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::WAIT;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON, or as a JSON string if it is not JSON.
    pub body: Value,
}

impl Reply {
    /// The `code` of an error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// `POST /api/<call>` with JSON, as a backend does.
#[derive(Clone)]
pub struct Http {
    addr: SocketAddr,
    key: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new(addr: SocketAddr, key: Option<&str>) -> Self {
        Self {
            addr,
            key: key.map(str::to_owned),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Calls `/api/<call>` with `body` as JSON.
    pub async fn call(&self, call: &str, body: Value) -> anyhow::Result<Reply> {
        self.send(
            Method::POST,
            &format!("/api/{call}"),
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await
    }

    /// Calls `/api/<call>` and fails unless the answer is 200; returns the body.
    pub async fn ok(&self, call: &str, body: Value) -> anyhow::Result<Value> {
        let reply = self.call(call, body.clone()).await?;
        anyhow::ensure!(
            reply.status == 200,
            "{call} {body} got {} {}",
            reply.status,
            reply.body
        );
        Ok(reply.body)
    }

    /// Any request, for tests that send what a backend should not.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(key) = &self.key {
            req = req.header("authorization", format!("apikey {key}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let res = tokio::time::timeout(WAIT, self.client.request(req))
            .await
            .context("HTTP request timed out")??;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = tokio::time::timeout(WAIT, res.into_body().collect())
            .await
            .context("HTTP body timed out")??
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// Adds `authorization: apikey <key>` to every gRPC call.
#[derive(Clone)]
pub struct ApiKey(Option<AsciiMetadataValue>);

impl Interceptor for ApiKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

pub type Grpc = ApiClient<InterceptedService<Channel, ApiKey>>;

/// A gRPC client of `switchboard.api.v1.Api` at `addr`.
pub async fn grpc(addr: SocketAddr, key: Option<&str>) -> anyhow::Result<Grpc> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(WAIT)
        .timeout(WAIT)
        .connect()
        .await
        .context("gRPC connect")?;
    let key = match key {
        Some(k) => Some(MetadataValue::try_from(format!("apikey {k}"))?),
        None => None,
    };
    Ok(ApiClient::with_interceptor(channel, ApiKey(key)))
}

/// A gRPC client of `switchboard.api.v1.Api` over TLS at `addr`, with
/// `tls` (trusting the server's CA and offering ALPN `h2`), checking the
/// name `localhost`.
pub async fn grpc_tls(
    addr: SocketAddr,
    key: Option<&str>,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<Grpc> {
    let name = rustls_pki_types::ServerName::try_from("localhost")?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(WAIT)
        .timeout(WAIT)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let (tls, name) = (tls.clone(), name.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .context("gRPC connect over TLS")?;
    let key = match key {
        Some(k) => Some(MetadataValue::try_from(format!("apikey {k}"))?),
        None => None,
    };
    Ok(ApiClient::with_interceptor(channel, ApiKey(key)))
}
