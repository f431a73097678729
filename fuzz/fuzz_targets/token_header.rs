//! Token parsing (gateway/src/auth.rs): the JOSE header (`alg`, `kid`,
//! `crit`) on any text, then the whole check against an HS256 key. Tokens
//! arrive from anyone, before authentication.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use switchboard_gateway::{
    AuthConfig,
    auth::{Authenticator, token_header},
};

static AUTH: LazyLock<Authenticator> = LazyLock::new(|| {
    Authenticator::new(&AuthConfig {
        hmac_secret: Some("fuzz-secret".into()),
        ..AuthConfig::default()
    })
    .expect("an HMAC key is a valid configuration")
});

fuzz_target!(|bytes: &[u8]| {
    let Ok(token) = std::str::from_utf8(bytes) else {
        return;
    };
    let header = token_header(token);
    if let Ok(h) = &header {
        assert!(h.crit.is_none(), "a crit header is refused");
    }
    let verified = AUTH.verify(token);
    // A token whose header is refused is refused as a whole.
    assert!(header.is_ok() || verified.is_err());
});
