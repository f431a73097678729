//! Gateway settings for tests: the dev default's permissive namespaces and
//! anonymous access, a known HMAC secret and API keys, and timers and rate
//! limits that keep out of a test's way.

use std::time::Duration;

use switchboard_core::Namespaces;
use switchboard_gateway::{ApiConfig, GatewayConfig, Settings, auth::TokenIssuer};

/// The HMAC secret that test tokens are signed with.
pub const SECRET: &str = "test-secret";

/// Two API keys, as during a rotation: both must work.
pub const API_KEY: &str = "test-api-key-new";
pub const OLD_API_KEY: &str = "test-api-key-old";

/// The gateway's name in test settings (the API's `info` reports it).
pub const GATEWAY_NAME: &str = "test-gw";

/// `Settings::for_test()`: settings as tests need them.
pub trait ForTest {
    fn for_test() -> Self;
}

impl ForTest for Settings {
    /// Like the dev default, with timers short enough for tests: tokens get
    /// no leeway, a drain takes at most 5 s, and the rate limit is high
    /// enough for tests that publish in bursts, and the per-address socket
    /// limits out of the way of tests that all connect from 127.0.0.1.
    fn for_test() -> Self {
        let mut gateway = GatewayConfig {
            name: GATEWAY_NAME.into(),
            ..Default::default()
        };
        gateway.auth.allow_anonymous = true;
        gateway.auth.hmac_secret = Some(SECRET.into());
        gateway.auth.leeway = Duration::ZERO;
        gateway.drain_timeout = Duration::from_secs(5);
        gateway.limits.rate_per_second = 1000.0;
        gateway.limits.rate_burst = 1000;
        // Every test client comes from 127.0.0.1, many at once.
        gateway.limits.max_sockets_per_ip = 100_000;
        gateway.limits.connection_rate_per_ip = 100_000.0;
        gateway.limits.connection_burst_per_ip = 100_000;
        Settings {
            gateway,
            namespaces: Namespaces::permissive(),
            api: ApiConfig {
                keys: vec![API_KEY.into(), OLD_API_KEY.into()],
                ..Default::default()
            },
            pusher: Default::default(),
        }
    }
}

/// Issues tokens that test settings accept.
pub fn issuer() -> TokenIssuer {
    TokenIssuer::hmac(SECRET)
}

/// A token for `user`, valid for `ttl`, for every channel.
pub fn token(user: &str, ttl: Duration) -> String {
    issuer().issue(user, ttl, None)
}
