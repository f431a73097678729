//! A real browser (headless Chromium) speaking Pusher frames over the plain
//! `WebSocket` API to `switchboard dev`'s Pusher door, since pusher-js
//! itself cannot be installed here: a public channel fed by the HTTP API,
//! a private channel signed by the app secret, and a client event from the
//! page to another client.
//!
//! Needs Chromium: `chromium` on PATH, or its path in `SWITCHBOARD_CHROMIUM`.

use std::path::Path;

use serde_json::{Value, json};
use switchboard_testkit::{
    browser::Browser,
    process::Process,
    pusher::{self, PusherClient},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The dev app of the embedded default config (config/dev.toml).
const DEV: (&str, &str, &str) = ("1", "switchboard-dev-key", "switchboard-dev-secret");

const PAGE: &str = r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const state = {socket: null, events: [], greet: null};
window.state = state;
const ws = new WebSocket("WS_URL");
ws.onmessage = (e) => {
  const f = JSON.parse(e.data);
  state.events.push(f.event + (f.channel ? "@" + f.channel : ""));
  if (f.event === "pusher:connection_established") {
    state.socket = JSON.parse(f.data).socket_id;
    ws.send(JSON.stringify({event: "pusher:subscribe", data: {channel: "browser-news"}}));
  }
  if (f.event === "pusher:ping") ws.send(JSON.stringify({event: "pusher:pong", data: {}}));
  if (f.event === "greet") state.greet = JSON.parse(f.data).text;
};
ws.onerror = () => { document.getElementById("out").textContent = "ERROR"; };
window.subscribePrivate = (auth) => ws.send(JSON.stringify(
  {event: "pusher:subscribe", data: {channel: "private-browser", auth: auth}}));
window.whisper = () => ws.send(JSON.stringify(
  {event: "client-hi", channel: "private-browser", data: {from: "chromium"}}));
</script></body></html>"#;

fn has_event(v: &Value, event: &str) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().any(|e| e.as_str() == Some(event)))
}

#[tokio::test]
async fn browser_page_speaks_pusher_frames() {
    let server = Process::start(Path::new(BIN), &["dev", "--listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("switchboard-pusher-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.html");
    let url = pusher::url(server.addr, DEV.1);
    std::fs::write(&page, PAGE.replace("WS_URL", &url)).unwrap();
    let mut browser = Browser::open(&format!("file://{}", page.display()))
        .await
        .unwrap();

    browser
        .wait_for("(window.state || {}).events || []", |v| {
            has_event(v, "pusher_internal:subscription_succeeded@browser-news")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; server log:\n{}", server.log()));
    let reply = pusher::trigger(
        server.addr,
        DEV,
        &json!({"name": "greet", "channel": "browser-news", "data": "{\"text\":\"hello\"}"}),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let greet = browser
        .wait_for("(window.state || {}).greet || null", |v| !v.is_null())
        .await
        .unwrap();
    assert_eq!(greet, "hello");

    // A private channel: the page's socket id, signed as an auth endpoint would.
    let socket = browser.eval("state.socket").await.unwrap();
    let socket = socket.as_str().unwrap();
    let message =
        switchboard_gateway::pusher::signature::channel_message(socket, "private-browser", None);
    let auth = format!(
        "{}:{}",
        DEV.1,
        switchboard_gateway::pusher::signature::sign(DEV.2, &message)
    );
    browser
        .eval(&format!("subscribePrivate({})", json!(auth)))
        .await
        .unwrap();
    let mut peer = PusherClient::connect(server.addr, DEV.1).await.unwrap();
    let data = json!({"channel": "private-browser", "auth": format!("{}:{}", DEV.1,
        switchboard_gateway::pusher::signature::sign(DEV.2,
            &switchboard_gateway::pusher::signature::channel_message(&peer.socket_id, "private-browser", None)))});
    peer.send("pusher:subscribe", None, data).await.unwrap();
    peer.answer("private-browser").await.unwrap();
    browser
        .wait_for("(window.state || {}).events || []", |v| {
            has_event(v, "pusher_internal:subscription_succeeded@private-browser")
        })
        .await
        .unwrap();
    browser.eval("whisper()").await.unwrap();
    let hi = peer
        .event("client-hi", Some("private-browser"))
        .await
        .unwrap();
    assert_eq!(hi["data"], json!({"from": "chromium"}));
    browser.close().await;
}
