//! Prometheus' HTTP API as a test reads it: scrape targets, instant
//! queries and metric names, over real HTTP (hyper's client, which reads
//! Go's chunked answers).

use std::{collections::BTreeMap, net::SocketAddr};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

use crate::WAIT;

/// One scrape target.
#[derive(Debug, Clone)]
pub struct Target {
    pub labels: BTreeMap<String, String>,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    pub last_error: String,
}

impl Target {
    pub fn instance(&self) -> &str {
        self.labels.get("instance").map_or("", String::as_str)
    }
}

/// One sample of an instant query.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub struct Prometheus {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Prometheus {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET /api/v1/<path>`; the `data` of a `success` answer.
    async fn api(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let uri = format!("http://{}/api/v1/{path_and_query}", self.addr);
        let fetch = async {
            let resp = self.client.get(uri.parse()?).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(WAIT, fetch)
            .await
            .with_context(|| format!("GET {uri} timed out"))?
            .with_context(|| format!("GET {uri}"))?;
        let json: Value = serde_json::from_slice(&body)
            .with_context(|| format!("GET {uri}: {status}, not JSON"))?;
        if json["status"] != "success" {
            bail!("GET {uri}: {status} {json}");
        }
        Ok(json["data"].clone())
    }

    /// The active scrape targets.
    pub async fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let data = self.api("targets?state=active").await?;
        let targets = data["activeTargets"]
            .as_array()
            .context("no activeTargets")?;
        Ok(targets
            .iter()
            .map(|t| Target {
                labels: labels(&t["labels"]),
                health: t["health"].as_str().unwrap_or_default().to_owned(),
                last_error: t["lastError"].as_str().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// An instant query's vector.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Sample>> {
        let data = self.api(&format!("query?query={}", encode(promql))).await?;
        let result = data["result"].as_array().context("no result vector")?;
        result
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("bad sample {s}"))?;
                Ok(Sample {
                    labels: labels(&s["metric"]),
                    value,
                })
            })
            .collect()
    }

    /// Every metric name Prometheus holds.
    pub async fn metric_names(&self) -> anyhow::Result<Vec<String>> {
        let data = self.api("label/__name__/values").await?;
        Ok(data
            .as_array()
            .context("not a list")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-encodes a query parameter (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_promql() {
        assert_eq!(
            super::encode("sum by (instance) (up{job=\"a\"})"),
            "sum%20by%20%28instance%29%20%28up%7Bjob%3D%22a%22%7D%29"
        );
    }
}
