//! The token policy as the binary applies it: the audience and issuer from
//! the environment (as the Helm chart sets them) reach both the server and
//! `switchboard token`, and `switchboard token` refuses a lifetime the
//! server would refuse.

use std::{path::Path, time::Duration};

use serde_json::json;
use switchboard_gateway::{AuthConfig, auth::Authenticator, auth::TokenIssuer};
use switchboard_testkit::{client::Client, process::Process};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const DEV_SECRET: &str = "switchboard-dev-secret";
const ENV: &[(&str, &str)] = &[
    ("SWITCHBOARD_AUTH_AUDIENCE", "switchboard-test"),
    ("SWITCHBOARD_AUTH_ISSUER", "https://idp.test"),
];

async fn token(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .arg("token")
        .args(args)
        .envs(ENV.iter().copied())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn audience_and_issuer_from_the_environment_reach_server_and_token_command() {
    let out = token(&["--user", "ann", "--ttl", "10m"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // It carries exactly the claims the environment asks for.
    let strict = |aud: &str| {
        Authenticator::new(&AuthConfig {
            hmac_secret: Some(DEV_SECRET.into()),
            audience: Some(aud.into()),
            issuer: Some("https://idp.test".into()),
            ..Default::default()
        })
        .unwrap()
    };
    assert_eq!(
        strict("switchboard-test").verify(&minted).unwrap().user_id,
        "ann"
    );
    assert!(strict("other").verify(&minted).is_err());

    let server = Process::start_with_env(
        Path::new(BIN),
        &["dev", "--listen", "127.0.0.1:0"],
        ENV,
        "ws://",
    )
    .await
    .unwrap();
    let mut c = Client::connect(&format!("{}?token={minted}", server.ws_url()))
        .await
        .unwrap();
    assert_eq!(c.next().await.unwrap()["user_id"], "ann");
    // A token without them is refused by that server.
    let bare = TokenIssuer::hmac(DEV_SECRET).issue("eve", Duration::from_secs(600), None);
    let mut c = Client::connect(&server.ws_url()).await.unwrap();
    let reply = c
        .request(json!({"type": "auth", "token": bare}))
        .await
        .unwrap();
    assert_eq!(reply["code"], 101, "{reply}");
    let text = reply["error"].as_str().unwrap();
    assert!(
        text.contains("missing the aud claim") || text.contains("missing the iss claim"),
        "{reply}"
    );
}

#[tokio::test]
async fn token_command_refuses_a_lifetime_over_the_maximum() {
    let out = token(&["--user", "ann", "--ttl", "25h"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_token_lifetime"), "{err}");
    assert!(
        token(&["--user", "ann", "--ttl", "24h"])
            .await
            .status
            .success()
    );
}
