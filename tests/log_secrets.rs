//! Logs never carry tokens or payloads, at any level: a real `switchboard
//! dev` at `--log trace` is given tokens in each of the three ways and
//! payloads over the WebSocket and the server API, and none of them shows
//! up in its output.

use std::{path::Path, time::Duration};

use serde_json::json;
use switchboard_gateway::auth::TokenIssuer;
use switchboard_testkit::{WAIT, api::Http, client::Client, process::Process};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// The embedded dev config's secret and API key.
const DEV_SECRET: &str = "switchboard-dev-secret";
const DEV_API_KEY: &str = "switchboard-dev-api-key";

#[tokio::test]
async fn trace_logs_carry_no_token_and_no_payload() {
    // `trace` for everything, and tungstenite named on its own as well:
    // the directives cannot lift the cap.
    let mut server = Process::start(
        Path::new(BIN),
        &[
            "--log",
            "trace,tungstenite=trace,tokio_tungstenite=trace",
            "dev",
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .await
    .expect("switchboard dev starts");
    let issuer = TokenIssuer::hmac(DEV_SECRET);
    let tokens: Vec<String> = ["query", "subprotocol", "frame"]
        .iter()
        .map(|user| issuer.issue(user, Duration::from_secs(600), None))
        .collect();
    let marker = format!("payload-marker-{}", std::process::id());

    let mut by_query = Client::connect(&format!("{}?token={}", server.ws_url(), tokens[0]))
        .await
        .unwrap();
    assert_eq!(by_query.next().await.unwrap()["user_id"], "query");
    let offered = format!("auth.{}", tokens[1]);
    let mut by_protocol =
        Client::connect_with_protocols(&server.ws_url(), &["switchboard", &offered])
            .await
            .unwrap();
    assert_eq!(by_protocol.next().await.unwrap()["user_id"], "subprotocol");
    let mut by_frame = Client::connect(&server.ws_url()).await.unwrap();
    let reply = by_frame
        .request(json!({"type": "auth", "token": tokens[2]}))
        .await
        .unwrap();
    assert_eq!(reply["user_id"], "frame");

    by_query.subscribe("chat:secret").await.unwrap();
    by_frame
        .publish("chat:secret", json!({ "text": format!("{marker}-ws") }))
        .await
        .unwrap();
    let api = Http::new(server.addr, Some(DEV_API_KEY));
    api.ok(
        "publish",
        json!({"channel": "chat:secret", "data": format!("{marker}-api")}),
    )
    .await
    .unwrap();
    // Delivered: the payloads went through every layer that could log them.
    for suffix in ["ws", "api"] {
        let m = by_query.message("chat:secret").await.unwrap();
        assert!(
            m["data"]
                .to_string()
                .contains(&format!("{marker}-{suffix}")),
            "{m}"
        );
    }
    // A refused API call whose error would quote the request.
    let refused = api
        .call(
            "publish",
            json!({"channel": 7, "data": format!("{marker}-bad")}),
        )
        .await
        .unwrap();
    assert_eq!(refused.error_code(), "bad_request");
    by_protocol.close().await.unwrap();
    by_frame.close().await.unwrap();
    by_query.close().await.unwrap();

    // tungstenite's own lines arrive (its logs are not off altogether, just
    // capped), the closes being the last of them.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.log().matches("Received close frame").count() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no close logged by tungstenite; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.terminate().await.unwrap();
    let log = server.log();
    // The filter took effect (our own debug lines), and the frame logs
    // stayed below trace.
    assert!(log.contains("DEBUG switchboard_gateway"), "{log}");
    assert!(!log.contains("TRACE tungstenite"), "{log}");
    for token in &tokens {
        // The signature alone is the secret part; the claims would do too.
        let signature = token.rsplit('.').next().unwrap();
        let claims = token.split('.').nth(1).unwrap();
        assert!(
            !log.contains(signature),
            "a token's signature is in the log"
        );
        assert!(!log.contains(claims), "a token's claims are in the log");
    }
    assert!(!log.contains(&marker), "a payload is in the log");
    assert!(!log.contains(DEV_API_KEY), "the API key is in the log");
}
