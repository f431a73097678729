//! The configuration file: one TOML document for every role. `dev` embeds
//! `config/dev.toml` so that it needs no file.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use anyhow::Context;
use serde::Deserialize;
use switchboard_core::{NamespaceOptions, Namespaces, PersonalOptions};
use switchboard_gateway::{ApiConfig, GatewayConfig, Settings};
use switchboard_node::BrokerConfig;

use crate::security::ClusterSecurity;

/// The embedded default of `switchboard dev`.
pub(crate) const DEV_CONFIG: &str = include_str!("../config/dev.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceOptions>,
    #[serde(default)]
    pub personal: PersonalOptions,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub cluster_security: ClusterSecurity,
}

impl Config {
    /// Reads `path`, or the embedded dev default without one; then applies
    /// environment overrides (`SWITCHBOARD_HMAC_SECRET`, `SWITCHBOARD_API_KEYS`,
    /// `SWITCHBOARD_DRAIN_TIMEOUT`).
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?,
            None => DEV_CONFIG.to_owned(),
        };
        let mut config: Config = toml::from_str(&text).with_context(|| match path {
            Some(path) => format!("parsing config {}", path.display()),
            None => "parsing the embedded dev config".to_owned(),
        })?;
        if let Ok(secret) = std::env::var("SWITCHBOARD_HMAC_SECRET")
            && !secret.is_empty()
        {
            config.gateway.auth.hmac_secret = Some(secret);
        }
        // Keys are secrets: deployments keep them out of config files.
        if let Ok(keys) = std::env::var("SWITCHBOARD_API_KEYS")
            && !keys.trim().is_empty()
        {
            config.api.keys = keys
                .split(',')
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect();
        }
        // An orchestrator sizes its grace period from the drain (Kubernetes'
        // terminationGracePeriodSeconds), so it sets both in one place.
        if let Ok(timeout) = std::env::var("SWITCHBOARD_DRAIN_TIMEOUT")
            && !timeout.trim().is_empty()
        {
            let timeout = humantime::parse_duration(timeout.trim())
                .with_context(|| format!("SWITCHBOARD_DRAIN_TIMEOUT={timeout:?}"))?;
            config.gateway.drain_timeout = timeout;
            config.broker.drain_timeout = timeout;
        }
        Ok(config)
    }

    pub(crate) fn namespaces(&self) -> Namespaces {
        Namespaces {
            namespaces: self.namespaces.clone(),
            personal: self.personal.clone(),
        }
    }

    pub(crate) fn gateway_settings(&self) -> Settings {
        Settings {
            gateway: self.gateway.clone(),
            namespaces: self.namespaces(),
            api: self.api.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::ChannelName;

    #[test]
    fn embedded_dev_config_parses_and_is_permissive() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:8000".parse().unwrap()));
        assert!(c.gateway.auth.allow_anonymous);
        assert_eq!(c.namespaces(), Namespaces::permissive());
        assert_eq!(c.api.keys, ["switchboard-dev-api-key"]);
        assert_eq!(c.api.listen, None);
    }

    #[test]
    fn bench_config_is_dev_without_presence_for_the_bench_namespace() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bench.toml");
        let c = Config::load(Some(&path)).unwrap();
        let ns = c.namespaces();
        let bench = ns.options(&ChannelName::new("bench:1").unwrap()).unwrap();
        assert!(!bench.presence && !bench.join_leave && bench.allow_publish);
        let other = ns.options(&ChannelName::new("chat:1").unwrap()).unwrap();
        assert!(other.presence && other.join_leave);
        assert!(c.gateway.auth.allow_anonymous);
    }
}
