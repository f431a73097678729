//! `switchboard token`: the token issuer the command signs with, either
//! the private key given on the command line or the config's HS256 secret,
//! so that a developer can mint a token the running config accepts.

use std::path::Path;

use anyhow::Context;
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
pub(crate) fn issuer(
    config: Option<&Path>,
    key: Option<&Path>,
    alg: Option<KeyAlg>,
) -> anyhow::Result<TokenIssuer> {
    match (key, alg) {
        (Some(key), Some(alg)) => {
            let alg = match alg {
                KeyAlg::Rs256 => Algorithm::RS256,
                KeyAlg::Es256 => Algorithm::ES256,
            };
            Ok(TokenIssuer::private_key(alg, &key.to_string_lossy())?)
        }
        _ => {
            let config = Config::load(config)?;
            let secret = config
                .gateway
                .auth
                .hmac_secret
                .context("the config has no gateway.auth.hmac_secret; pass --key and --alg")?;
            Ok(TokenIssuer::hmac(&secret))
        }
    }
}
