//! A gateway that hangs (SIGSTOP) with its sockets open: the owner's lease
//! on its delivery stream runs out, and with it the presence of its
//! clients, announced to the others with leave events.

use std::{path::Path, time::Instant};

use serde_json::json;
use switchboard_testkit::{
    client::Client,
    cluster::{broker, gateway, scenario_config, seed_of, subscribe_once_routed},
    process::Process,
};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_gateways_presence_expires_with_leave_events() {
    let bin = Path::new(BIN);
    let b1 = broker(bin, "b1", None).await.unwrap();
    let seed = seed_of(&b1).unwrap();
    let _b2 = broker(bin, "b2", Some(&seed)).await.unwrap();
    let config = scenario_config("lease").unwrap();
    let mut g1 = gateway(bin, "g1", &seed, &config).await.unwrap();
    let g2 = gateway(bin, "g2", &seed, &config).await.unwrap();

    let token = |user: &str| {
        let out = std::process::Command::new(BIN)
            .args(["token", "--config", &config, "--user", user])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let url = |g: &Process, user: &str| format!("{}?token={}", g.ws_url(), token(user));
    let mut alice = Client::connect(&url(&g1, "alice")).await.unwrap();
    let mut bob = Client::connect(&url(&g2, "bob")).await.unwrap();
    for c in [&mut bob, &mut alice] {
        subscribe_once_routed(c, "room:lease").await.unwrap();
    }
    bob.wait_for(|f| f["type"] == "join" && f["info"]["user_id"] == "alice")
        .await
        .unwrap();

    // g1 hangs (SIGSTOP): its sockets stay open but nothing answers, as
    // when the network cuts it off. Its lease at the owner (the delivery
    // stream, kept alive by HTTP/2 pings) runs out, and with it alice's
    // presence, with a leave event.
    let frozen = Instant::now();
    g1.freeze().unwrap();
    let leave = bob.wait_for(|f| f["type"] == "leave").await.unwrap();
    let expired_in = frozen.elapsed();
    assert_eq!(leave["info"]["user_id"], "alice", "{leave}");
    let presence = bob
        .ok(json!({"type": "presence", "channel": "room:lease"}))
        .await
        .unwrap();
    let users: Vec<&str> = presence["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["bob"], "{presence}");
    g1.kill().await.unwrap();
    println!("lease: a hung gateway's presence expired in {expired_in:?}, with leave events");
}
