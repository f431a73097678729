//! Presence that scales: a cap on a channel's presence entries, join and
//! leave events that stop above a number of clients (said in the subscribe
//! reply), and presence read in pages, by clients and by the server API.

mod common;

use std::collections::BTreeSet;

use common::{API_KEY, Client, ForTest, Settings, TestServer};
use serde_json::{Value, json};
use switchboard_core::NamespaceOptions;
use switchboard_testkit::api::Http;

const CLIENTS: usize = 1000;
const EVENTS_UP_TO: usize = 20;

async fn server() -> TestServer {
    let mut s = Settings::for_test();
    s.namespaces.namespaces.insert(
        "room".into(),
        NamespaceOptions {
            presence_max_clients: CLIENTS,
            join_leave_max_clients: EVENTS_UP_TO,
            ..NamespaceOptions::permissive()
        },
    );
    TestServer::start(s).await
}

/// Client ids of every page of `channel`'s presence, asked `limit` at a time.
async fn paged(c: &mut Client, channel: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = json!({"type": "presence", "channel": channel, "limit": limit});
        if let Some(c) = &cursor {
            req["cursor"] = json!(c);
        }
        let reply = c.ok(req).await.unwrap();
        let clients = reply["clients"].as_array().unwrap();
        assert!(clients.len() <= limit, "{reply}");
        ids.extend(
            clients
                .iter()
                .map(|c| c["client_id"].as_str().unwrap().to_owned()),
        );
        match reply["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

fn exactly_once_in_order(ids: &[String]) {
    assert_eq!(ids.len(), CLIENTS);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "pages overlap or skip back"
    );
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), CLIENTS);
}

#[tokio::test]
async fn a_thousand_joins_cost_linear_frames_the_cap_refuses_and_pages_cover_everyone() {
    let server = server().await;
    let mut bystander = server.client().await;
    let first = bystander
        .ok(json!({"type": "subscribe", "channel": "room:big"}))
        .await
        .unwrap();
    assert_eq!(first["join_leave"], true, "{first}");
    let mut members: Vec<Client> = Vec::new();
    for _ in 1..CLIENTS {
        let mut c = server.client().await;
        c.ok(json!({"type": "subscribe", "channel": "room:big"}))
            .await
            .unwrap();
        members.push(c);
    }
    // A late subscriber is told that events are off here.
    let mut late = server.client().await;
    let full = late
        .request(json!({"type": "subscribe", "channel": "room:big"}))
        .await
        .unwrap();
    assert_eq!(full["type"], "error", "{full}");
    assert_eq!(full["code"], 114, "{full}");
    assert_eq!(
        full["error"],
        format!("channel is full: at most {CLIENTS} clients in its presence")
    );
    // The leave of one member makes room; events stay off for the newcomer.
    members.pop().unwrap().close().await.unwrap();
    let mut room = None;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while tokio::time::Instant::now() < deadline {
        let r = late
            .request(json!({"type": "subscribe", "channel": "room:big"}))
            .await
            .unwrap();
        if r["type"] == "response" {
            room = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let joined = room.expect("a leave makes room in the presence");
    assert_eq!(joined["data"]["join_leave"], false, "{joined}");

    // The bystander saw a join for each of the first clients only, and
    // still receives publications in order.
    let mut publisher = server.client().await;
    publisher
        .publish("room:big", json!({"marker": 1}))
        .await
        .unwrap();
    let mut joins = 0;
    let mut leaves = 0;
    loop {
        let f: Value = bystander.next().await.unwrap();
        match f["type"].as_str().unwrap() {
            "join" => joins += 1,
            "leave" => leaves += 1,
            "message" => {
                assert_eq!(f["data"]["marker"], 1);
                break;
            }
            other => panic!("unexpected {other}: {f}"),
        }
    }
    // Its own join and those of the next clients, up to the threshold;
    // without it, 1000 joins would have sent it 1000 and everyone ~500,000.
    assert_eq!(joins, EVENTS_UP_TO);
    assert_eq!(leaves, 0);

    // Every member exactly once, by clients and by the server API.
    exactly_once_in_order(&paged(&mut bystander, "room:big", 300).await);
    let api = Http::new(server.api_addr, Some(API_KEY));
    let mut ids = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let page = api
            .ok(
                "presence",
                json!({"channel": "room:big", "limit": 400, "cursor": cursor}),
            )
            .await
            .unwrap();
        let clients = page["clients"].as_array().unwrap();
        assert!(clients.len() <= 400);
        ids.extend(
            clients
                .iter()
                .map(|c| c["client_id"].as_str().unwrap().to_owned()),
        );
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    exactly_once_in_order(&ids);
    // Without a limit a page holds at most 1000.
    let one = bystander
        .ok(json!({"type": "presence", "channel": "room:big"}))
        .await
        .unwrap();
    assert_eq!(one["clients"].as_array().unwrap().len(), CLIENTS);
    assert!(one.get("next_cursor").is_none(), "{one}");
}
