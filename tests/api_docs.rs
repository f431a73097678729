//! The server API's documents are true: every `curl` example in
//! docs/api.md runs, as written, against the real `switchboard dev` and gets
//! the documented status and shape; docs/openapi.yaml describes every call.

use std::{collections::BTreeSet, net::SocketAddr, path::Path, time::Duration};

use serde_json::{Value, json};
use switchboard_gateway::api::http::CALLS;
use switchboard_testkit::{WAIT, api::Http, process::Process};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const API_MD: &str = include_str!("../docs/api.md");
const OPENAPI: &str = include_str!("../docs/openapi.yaml");
/// The address the docs use.
const DOC_ADDR: &str = "127.0.0.1:8000";

/// Fenced code blocks: (info string, text).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), Vec::new())),
            (Some(_), Some(_)) => {
                let (info, lines) = open.take().expect("block is open");
                blocks.push((info, lines.join("\n")));
            }
            (Some((_, lines)), None) => lines.push(line),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "docs/api.md has an unclosed code block");
    blocks
}

struct Example {
    command: String,
    status: u16,
    body: Value,
}

/// Each `curl` block with the `http` block that documents its answer.
fn examples() -> Vec<Example> {
    let blocks = code_blocks(API_MD);
    let mut out = Vec::new();
    for (i, (info, text)) in blocks.iter().enumerate() {
        if info != "sh" || !text.trim_start().starts_with("curl ") {
            continue;
        }
        let (answer_info, answer) = blocks
            .get(i + 1)
            .unwrap_or_else(|| panic!("no answer documented after:\n{text}"));
        assert_eq!(
            answer_info, "http",
            "the block after {text:?} must be the answer"
        );
        let mut lines = answer.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let body_text: String = lines.collect::<Vec<_>>().join("\n");
        let body = serde_json::from_str(body_text.trim())
            .unwrap_or_else(|e| panic!("documented body of {text:?} is not JSON: {e}"));
        out.push(Example {
            command: text.clone(),
            status,
            body,
        });
    }
    out
}

/// The top-level field names of a JSON object, and of its first nested
/// object under `error`, to compare shapes whose values vary (epochs, times).
fn shape(v: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Some(map) = v.as_object() {
        for (k, inner) in map {
            keys.insert(k.clone());
            if k == "error"
                && let Some(inner) = inner.as_object()
            {
                keys.extend(inner.keys().map(|ik| format!("error.{ik}")));
            }
        }
    }
    keys
}

async fn run_curl(command: &str, addr: SocketAddr) -> (u16, Value, String) {
    let command = command.replace(DOC_ADDR, &addr.to_string());
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .output(),
    )
    .await
    .expect("curl finished in time")
    .expect("sh runs (and curl is installed)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command}\nexited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{command}\nprinted no HTTP head: {text}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{command}\nno status in {head}"));
    let body = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("{command}\nbody is not JSON ({e}): {body}"));
    (status, body, text)
}

#[tokio::test]
async fn every_curl_example_in_docs_api_md_works_against_switchboard_dev() {
    let examples = examples();
    assert!(examples.len() >= CALLS.len(), "too few examples");
    for call in CALLS {
        assert!(
            examples
                .iter()
                .any(|e| e.command.contains(&format!("/api/{call} "))
                    || e.command.contains(&format!("/api/{call}\n"))),
            "docs/api.md has no curl example for {call}"
        );
    }
    let server = Process::start(Path::new(BIN), &["dev", "--listen", "127.0.0.1:0"])
        .await
        .expect("switchboard dev starts");
    let mut previous: Option<Value> = None;
    for example in &examples {
        let (status, body, raw) = run_curl(&example.command, server.addr).await;
        assert_eq!(
            status, example.status,
            "{}\ndocumented {}, got:\n{raw}",
            example.command, example.status
        );
        assert_eq!(
            shape(&body),
            shape(&example.body),
            "{}\nthe answer's fields differ from the documented ones:\n{raw}",
            example.command
        );
        // The documented retry answers exactly like the first attempt.
        if example.command.contains("idempotency_key")
            && let Some(prev) = &previous
            && previous_command_is_same(&examples, example)
        {
            assert_eq!(&body, prev, "a retry must return the first position");
        }
        previous = Some(body);
    }
}

fn previous_command_is_same(examples: &[Example], example: &Example) -> bool {
    let i = examples
        .iter()
        .position(|e| std::ptr::eq(e, example))
        .expect("example is in the list");
    i > 0 && examples[i - 1].command == example.command
}

#[tokio::test]
async fn openapi_document_describes_every_call_and_the_error_format() {
    let doc: Value = serde_yaml_ng::from_str(OPENAPI).expect("docs/openapi.yaml parses");
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "OpenAPI 3.x"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let implemented: BTreeSet<String> = CALLS.iter().map(|c| format!("/api/{c}")).collect();
    assert_eq!(
        documented,
        implemented.iter().map(String::as_str).collect(),
        "paths in openapi.yaml vs calls served"
    );
    for (path, item) in paths {
        let post = &item["post"];
        assert!(post.is_object(), "{path} must be a POST");
        for status in ["200", "401"] {
            assert!(
                post["responses"][status].is_object(),
                "{path} documents no {status}"
            );
        }
    }
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], json!(["code", "message"]));
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["name"],
        "Authorization"
    );
}

#[tokio::test]
async fn api_listen_flag_serves_the_api_on_its_own_address() {
    let server = Process::start(
        Path::new(BIN),
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ],
    )
    .await
    .expect("switchboard dev starts");
    let deadline = tokio::time::Instant::now() + WAIT;
    let api_addr: SocketAddr = loop {
        let log = server.log();
        if let Some(addr) = log
            .lines()
            .find_map(|l| l.split("server API: http://").nth(1))
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
        {
            break addr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no API address in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(api_addr, server.addr);
    let key = Some("switchboard-dev-api-key");
    let reply = Http::new(api_addr, key)
        .call("publish", json!({"channel": "chat:a", "data": 1}))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let off = Http::new(server.addr, key)
        .call("info", json!({}))
        .await
        .unwrap();
    assert_eq!(off.status, 404);
}
