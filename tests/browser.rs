//! A real browser (headless Chromium) using the plain `WebSocket` API
//! against `switchboard dev`, as the README's example does.
//!
//! Needs Chromium: `chromium` on PATH (Debian: `apt-get install chromium`),
//! or its path in `SWITCHBOARD_CHROMIUM`. `.ci/run` installs it.

use std::path::Path;

use switchboard_testkit::{browser::Browser, process::Process};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

const PAGE: &str = r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const out = document.getElementById("out");
const seen = [];
const ws = new WebSocket("WS_URL");
ws.onmessage = (e) => {
  const f = JSON.parse(e.data);
  seen.push(f.type + (f.type === "message" ? ":" + f.data.text : ""));
  if (f.type === "message") { out.textContent = "DONE " + seen.join(","); ws.close(); }
};
ws.onopen = () => {
  ws.send(JSON.stringify({type: "subscribe", id: 1, channel: "chat:lobby"}));
  ws.send(JSON.stringify({type: "publish", id: 2, channel: "chat:lobby", data: {text: "from-chromium"}}));
};
ws.onerror = () => { out.textContent = "ERROR"; };
</script></body></html>"#;

#[tokio::test]
async fn browser_page_subscribes_publishes_and_receives() {
    let server = Process::start(Path::new(BIN), &["dev", "--listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("switchboard-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.html");
    std::fs::write(&page, PAGE.replace("WS_URL", &server.ws_url())).unwrap();

    let mut browser = Browser::open(&format!("file://{}", page.display()))
        .await
        .unwrap();
    let out = browser
        .wait_for(
            "(document.getElementById('out') || {}).textContent || 'pending'",
            |v| v.as_str().is_some_and(|s| s != "pending"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; server log:\n{}", server.log()));
    assert_eq!(out, "DONE response,join,response,message:from-chromium");
    browser.close().await;
}
