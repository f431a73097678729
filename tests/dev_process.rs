//! The `switchboard` binary as users run it: `dev` on its embedded default,
//! `token` for that running config, and SIGTERM.

use std::path::Path;

use serde_json::json;
use switchboard_testkit::{client::Client, http, process::Process};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn dev(extra: &[&str]) -> Process {
    let mut args = vec!["dev", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Process::start(Path::new(BIN), &args)
        .await
        .expect("switchboard dev starts")
}

async fn token(args: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .arg("token")
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn dev_serves_pub_sub_out_of_the_box_and_drains_on_sigterm() {
    let mut server = dev(&[]).await;
    assert_eq!(http::get(server.addr, "/readyz").await.unwrap().0, 200);
    let mut a = Client::connect(&server.ws_url()).await.unwrap();
    let mut b = Client::connect(&server.ws_url()).await.unwrap();
    a.subscribe("chat:lobby").await.unwrap();
    b.subscribe("chat:lobby").await.unwrap();
    b.publish("chat:lobby", json!({"text": "hello"}))
        .await
        .unwrap();
    assert_eq!(
        a.message("chat:lobby").await.unwrap()["data"]["text"],
        "hello"
    );
    let presence = a
        .ok(json!({"type": "presence_stats", "channel": "chat:lobby"}))
        .await
        .unwrap();
    assert_eq!(presence["num_clients"], 2);

    let status = server.terminate().await.unwrap();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.log()
    );
    let closed = a.closed().await.unwrap();
    assert_eq!(closed.code, Some(1001));
    assert_eq!(closed.disconnect().unwrap()["reconnect"], true);
}

#[tokio::test]
async fn token_command_issues_tokens_the_running_config_accepts() {
    let server = dev(&[]).await;
    let t = token(&["--user", "alice", "--ttl", "10m", "--channels", "chat:*"]).await;
    let mut c = Client::connect(&format!("{}?token={t}", server.ws_url()))
        .await
        .unwrap();
    let auth = c.next().await.unwrap();
    assert_eq!(
        (auth["type"].as_str(), auth["user_id"].as_str()),
        (Some("authenticated"), Some("alice"))
    );
    c.subscribe("chat:general").await.unwrap();
    let denied = c
        .request(json!({"type": "subscribe", "channel": "news:today"}))
        .await
        .unwrap();
    assert_eq!(denied["code"], 103);
}

#[tokio::test]
async fn dev_takes_a_config_file() {
    let dir = std::env::temp_dir().join(format!("switchboard-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("closed.toml");
    std::fs::write(
        &path,
        r#"
[gateway.auth]
allow_anonymous = false
hmac_secret = "file-secret"

[namespaces.chat]
allow_publish = true
"#,
    )
    .unwrap();
    let cfg = path.to_str().unwrap();
    let server = dev(&["--config", cfg]).await;
    let mut anon = Client::connect(&server.ws_url()).await.unwrap();
    anon.send(json!({"type": "subscribe", "channel": "chat:a"}))
        .await
        .unwrap();
    assert_eq!(anon.closed().await.unwrap().code, Some(4001));
    let t = token(&["--user", "bob", "--config", cfg]).await;
    let mut bob = Client::connect(&format!("{}?token={t}", server.ws_url()))
        .await
        .unwrap();
    bob.next().await.unwrap();
    bob.subscribe("chat:a").await.unwrap();
    let unknown = bob
        .request(json!({"type": "subscribe", "channel": "other:a"}))
        .await
        .unwrap();
    assert_eq!(unknown["code"], 102);
}

/// docker-compose tells the gateways where their port is published
/// (`SWITCHBOARD_PUBLISHED_AT`, from `SWITCHBOARD_PORT`): with the public
/// development secrets, anything but loopback is refused at start.
#[tokio::test]
async fn development_secrets_are_refused_where_the_port_is_published_beyond_loopback() {
    let started = |published: &'static str, secrets: &'static [(&str, &str)]| async move {
        let mut env = vec![
            ("SWITCHBOARD_PUBLISHED_AT", published),
            ("SWITCHBOARD_HMAC_SECRET", ""),
            ("SWITCHBOARD_API_KEYS", ""),
        ];
        env.extend_from_slice(secrets);
        Process::start_with_env(
            Path::new(BIN),
            &["dev", "--listen", "127.0.0.1:0"],
            &env,
            "ws://",
        )
        .await
    };
    let refused = tokio::process::Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("SWITCHBOARD_PUBLISHED_AT", "0.0.0.0:8000")
        .env_remove("SWITCHBOARD_HMAC_SECRET")
        .env_remove("SWITCHBOARD_API_KEYS")
        .output();
    let refused = tokio::time::timeout(switchboard_testkit::WAIT, refused)
        .await
        .expect("exits at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("HMAC secret and API key would be reachable at 0.0.0.0:8000")
            && stderr.contains("SWITCHBOARD_API_KEYS"),
        "{stderr}"
    );
    started("127.0.0.1:8000", &[])
        .await
        .expect("loopback is fine");
    started(
        "0.0.0.0:8000",
        &[
            ("SWITCHBOARD_HMAC_SECRET", "a secret of this deployment"),
            ("SWITCHBOARD_API_KEYS", "a key of this deployment"),
        ],
    )
    .await
    .expect("own secrets are fine");
}
