//! The development secrets: `config/dev.toml`'s HS256 secret and API key,
//! public in this repository. Anyone can mint tokens and call the server
//! API with them, so a gateway that holds them must not be reachable beyond
//! this machine. Where a deployment publishes the client port through a
//! mapping the gateway cannot see (docker-compose's `SWITCHBOARD_PORT`), it
//! tells the gateway in `SWITCHBOARD_PUBLISHED_AT`, and the gateway refuses
//! to start with those secrets on an address other than loopback.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::config::Config;

/// Where the client port is published, as Docker writes a port mapping:
/// `HOST_IP:PORT`, `[IPV6]:PORT` or `PORT` (every interface).
pub(crate) const PUBLISHED_AT: &str = "SWITCHBOARD_PUBLISHED_AT";

const DEV_HMAC_SECRET: &str = "switchboard-dev-secret";
const DEV_API_KEY: &str = "switchboard-dev-api-key";

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "refusing to start: the public development {what} would be reachable at {published} \
     ({PUBLISHED_AT}; docker-compose sets it from SWITCHBOARD_PORT). Set your own \
     SWITCHBOARD_HMAC_SECRET and SWITCHBOARD_API_KEYS, or publish on 127.0.0.1"
)]
pub(crate) struct Exposed {
    what: &'static str,
    published: String,
}

/// Refuses `config` when it holds a development secret and `published`
/// (the value of [`PUBLISHED_AT`], if set) is not a loopback address.
pub(crate) fn check(config: &Config, published: Option<&str>) -> Result<(), Exposed> {
    let Some(published) = published.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    if is_loopback(published) {
        return Ok(());
    }
    let hmac = config.gateway.auth.hmac_secret.as_deref() == Some(DEV_HMAC_SECRET);
    let api = config.api.keys.iter().any(|k| k == DEV_API_KEY);
    let what = match (hmac, api) {
        (true, true) => "HMAC secret and API key",
        (true, false) => "HMAC secret",
        (false, true) => "API key",
        (false, false) => return Ok(()),
    };
    Err(Exposed {
        what,
        published: published.to_owned(),
    })
}

/// True only for a mapping certainly bound to loopback; anything not
/// understood counts as public.
fn is_loopback(published: &str) -> bool {
    if let Ok(addr) = published.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let Some((host, _port)) = published.rsplit_once(':') else {
        // A port alone: Docker binds every interface.
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Config {
        Config::load(None).unwrap()
    }

    #[test]
    fn loopback_mappings_are_told_from_public_ones() {
        for ok in [
            "127.0.0.1:8000",
            "127.0.0.1:0",
            "[::1]:8000",
            "localhost:8000",
            "127.0.0.2:80",
        ] {
            assert!(is_loopback(ok), "{ok}");
        }
        for public in [
            "8000",
            "0.0.0.0:8000",
            "192.168.1.5:8000",
            "[::]:8000",
            ":8000",
            "x",
        ] {
            assert!(!is_loopback(public), "{public}");
        }
    }

    #[test]
    fn development_secrets_are_refused_on_a_public_address_only() {
        let mut config = dev();
        config.gateway.auth.hmac_secret = Some(DEV_HMAC_SECRET.into());
        config.api.keys = vec![DEV_API_KEY.into()];
        assert_eq!(check(&config, None), Ok(()));
        assert_eq!(check(&config, Some("")), Ok(()));
        assert_eq!(check(&config, Some("127.0.0.1:8000")), Ok(()));
        let refused = check(&config, Some("0.0.0.0:8000")).unwrap_err();
        assert_eq!(refused.what, "HMAC secret and API key");
        assert!(refused.to_string().contains("SWITCHBOARD_HMAC_SECRET"));

        config.gateway.auth.hmac_secret = Some("a secret of my own".into());
        assert_eq!(check(&config, Some("8000")).unwrap_err().what, "API key");
        config.api.keys = vec!["a key of my own".into()];
        assert_eq!(check(&config, Some("8000")), Ok(()));
    }
}
