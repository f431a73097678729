//! `switchboard token`: the token issuer the command signs with, either
//! the private key given on the command line or the config's HS256 secret,
//! so that a developer can mint a token the running config accepts: with
//! the `aud` and `iss` it requires, and within its longest lifetime.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use clap::ValueEnum;
use jsonwebtoken::Algorithm;
use switchboard_gateway::auth::TokenIssuer;

use crate::config::Config;

/// The algorithm of a `--key`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum KeyAlg {
    Rs256,
    Es256,
}

/// The private key when one is given with its algorithm; otherwise the
/// secret of the config (the embedded dev config when none is named).
/// Either way the config says which `aud` and `iss` to add, and how long
/// a token may live: a longer `ttl` is refused here rather than by the
/// server later.
pub(crate) fn issuer(
    config: Option<&Path>,
    key: Option<&Path>,
    alg: Option<KeyAlg>,
    ttl: Duration,
) -> anyhow::Result<TokenIssuer> {
    let config = Config::load(config)?;
    let auth = &config.gateway.auth;
    if ttl > auth.max_token_lifetime {
        bail!(
            "--ttl {} is longer than gateway.auth.max_token_lifetime ({}): the server would refuse the token",
            humantime::format_duration(ttl),
            humantime::format_duration(auth.max_token_lifetime)
        );
    }
    let issuer = match (key, alg) {
        (Some(key), Some(alg)) => {
            let alg = match alg {
                KeyAlg::Rs256 => Algorithm::RS256,
                KeyAlg::Es256 => Algorithm::ES256,
            };
            TokenIssuer::private_key(alg, &key.to_string_lossy())?
        }
        _ => {
            let secret = auth
                .hmac_secret
                .as_deref()
                .context("the config has no gateway.auth.hmac_secret; pass --key and --alg")?;
            TokenIssuer::hmac(secret)
        }
    };
    Ok(issuer.for_config(auth))
}
