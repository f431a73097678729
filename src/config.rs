//! The configuration file: one TOML document for every role. `dev` embeds
//! `config/dev.toml` so that it needs no file.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use anyhow::Context;
use serde::Deserialize;
use switchboard_core::{NamespaceOptions, Namespaces, PersonalOptions};
use switchboard_gateway::{ApiConfig, GatewayConfig, Settings, pusher::PusherConfig};
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
    #[serde(default)]
    pub pusher: PusherConfig,
}

impl Config {
    /// Reads `path`, or the embedded dev default without one; then applies
    /// environment overrides (`SWITCHBOARD_HMAC_SECRET`, `SWITCHBOARD_AUTH_AUDIENCE`,
    /// `SWITCHBOARD_AUTH_ISSUER`, `SWITCHBOARD_API_KEYS`, `SWITCHBOARD_DRAIN_TIMEOUT`,
    /// `SWITCHBOARD_MAX_CONNECTIONS`, `SWITCHBOARD_MEMORY_BUDGET_BYTES`).
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
        // The chart sets the token audience and issuer from its values,
        // whatever config file it is given.
        for (var, field) in [
            (
                "SWITCHBOARD_AUTH_AUDIENCE",
                &mut config.gateway.auth.audience,
            ),
            ("SWITCHBOARD_AUTH_ISSUER", &mut config.gateway.auth.issuer),
        ] {
            if let Ok(value) = std::env::var(var)
                && !value.trim().is_empty()
            {
                *field = Some(value.trim().to_owned());
            }
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
        // The chart derives both from the pod's memory limit (docs/operations.md).
        for (var, field) in [
            (
                "SWITCHBOARD_MAX_CONNECTIONS",
                &mut config.gateway.limits.max_connections,
            ),
            (
                "SWITCHBOARD_MEMORY_BUDGET_BYTES",
                &mut config.broker.memory_budget_bytes,
            ),
        ] {
            if let Ok(value) = std::env::var(var)
                && !value.trim().is_empty()
            {
                *field = value
                    .trim()
                    .parse()
                    .with_context(|| format!("{var}={value:?}"))?;
            }
        }
        Ok(config)
    }

    /// The configured namespaces, and each Pusher app's.
    pub(crate) fn namespaces(&self) -> Namespaces {
        let mut namespaces = self.namespaces.clone();
        namespaces.extend(self.pusher.namespaces());
        Namespaces {
            namespaces,
            personal: self.personal.clone(),
        }
    }

    pub(crate) fn gateway_settings(&self) -> Settings {
        Settings {
            gateway: self.gateway.clone(),
            namespaces: self.namespaces(),
            api: self.api.clone(),
            pusher: self.pusher.clone(),
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
        let mut expected = Namespaces::permissive();
        expected.namespaces.extend(c.pusher.namespaces());
        assert_eq!(c.namespaces(), expected);
        assert_eq!(c.pusher.apps.len(), 1);
        assert_eq!(c.pusher.validate(), Ok(()));
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
