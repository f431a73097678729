//! A real browser (headless Chromium) using the plain `WebSocket` API
//! against `switchboard dev`, as the README's example does.
//!
//! Needs Chromium: `chromium` on PATH (Debian: `apt-get install chromium`),
//! or its path in `SWITCHBOARD_CHROMIUM`. `.ci/run` installs it.

use std::{path::Path, time::Duration};

use switchboard_cluster_tests::process::Process;

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
    let chromium = std::env::var("SWITCHBOARD_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let server = Process::start(Path::new(BIN), &["dev", "--listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("switchboard-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("page.html");
    std::fs::write(&page, PAGE.replace("WS_URL", &server.ws_url())).unwrap();

    let run = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", dir.join("profile").display()),
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished")
        .unwrap_or_else(|e| {
            panic!("cannot run {chromium:?} ({e}); install Chromium or set SWITCHBOARD_CHROMIUM")
        });
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("DONE response,join,response,message:from-chromium"),
        "page did not complete; DOM:\n{dom}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}
