//! The server API over real gRPC (tonic's client over HTTP/2), against a
//! real server: the same operations and the same error codes as HTTP.

mod common;

use common::{API_KEY, ForTest, OLD_API_KEY, Settings, TestServer};
use serde_json::json;
use switchboard_gateway::api::error::GRPC_CODE_METADATA;
use switchboard_proto::api::v1 as pb;
use switchboard_testkit::api::{Grpc, grpc};
use tonic::Code;

async fn client(server: &TestServer) -> Grpc {
    grpc(server.api_addr, Some(API_KEY)).await.unwrap()
}

/// The gRPC code and the stable API error code of a failed call.
fn refusal<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = r.expect_err("the call should fail");
    let code = status
        .metadata()
        .get(GRPC_CODE_METADATA)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(!status.message().is_empty());
    (status.code(), code)
}

fn publish(channel: &str, data: &str, key: Option<&str>) -> pb::PublishRequest {
    pb::PublishRequest {
        channel: channel.into(),
        data_json: data.into(),
        idempotency_key: key.map(str::to_owned),
    }
}

#[tokio::test]
async fn keys_both_work_and_missing_or_wrong_ones_are_unauthenticated() {
    let server = TestServer::dev().await;
    for key in [API_KEY, OLD_API_KEY] {
        let mut c = grpc(server.addr, Some(key)).await.unwrap();
        c.info(pb::Empty {}).await.unwrap();
    }
    for key in [None, Some("wrong")] {
        let mut c = grpc(server.addr, key).await.unwrap();
        assert_eq!(
            refusal(c.publish(publish("chat:a", "1", None)).await),
            (Code::Unauthenticated, "unauthorized".into())
        );
    }
}

#[tokio::test]
async fn every_call_works_over_grpc() {
    let server = TestServer::dev().await;
    let mut api = client(&server).await;
    let mut alice = server.user("alice").await;
    alice.subscribe("chat:g").await.unwrap();

    let first = api
        .publish(publish("chat:g", r#"{"text":"hi"}"#, Some("k1")))
        .await
        .unwrap()
        .into_inner()
        .position
        .unwrap();
    let retry = api
        .publish(publish("chat:g", r#"{"text":"hi"}"#, Some("k1")))
        .await
        .unwrap()
        .into_inner()
        .position
        .unwrap();
    assert_eq!(first, retry);
    let m = alice.message("chat:g").await.unwrap();
    assert_eq!(
        (m["data"].clone(), m["offset"].clone()),
        (json!({"text": "hi"}), json!(1))
    );

    let b = api
        .broadcast(pb::BroadcastRequest {
            channels: vec!["chat:g".into(), "chat:h".into()],
            data_json: "2".into(),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.results.len(), 2);
    assert_eq!(b.results[0].position.as_ref().unwrap().offset, 2);
    assert!(b.results[1].error_code.is_none());
    assert_eq!(alice.message("chat:g").await.unwrap()["data"], 2);

    let sent = api
        .send_to_user(pb::SendToUserRequest {
            user: "alice".into(),
            data_json: r#""psst""#.into(),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.position.unwrap().offset, 1);
    assert_eq!(alice.message("#alice").await.unwrap()["data"], "psst");

    let presence = api
        .presence(pb::PresenceRequest {
            channel: "chat:g".into(),
            cursor: None,
            limit: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(presence.clients.len(), 1);
    assert_eq!(presence.clients[0].user_id, "alice");
    assert_eq!(presence.next_cursor, None);
    let stats = api
        .presence_stats(pb::ChannelRequest {
            channel: "chat:g".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
    let online = api
        .user_online(pb::UserRequest {
            user: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(online.online);

    let history = api
        .history(pb::HistoryRequest {
            channel: "chat:g".into(),
            limit: Some(1),
            since: None,
            reverse: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.position.unwrap().offset, 2);
    assert_eq!(history.publications.len(), 1);
    assert_eq!(history.publications[0].data_json, "2");
    let page = api
        .history(pb::HistoryRequest {
            channel: "chat:g".into(),
            limit: None,
            since: Some(first.clone()),
            reverse: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.complete, Some(true));
    assert_eq!(page.publications[0].offset, 2);

    let channels = api
        .channels(pb::ChannelsRequest {
            prefix: "chat:".into(),
            limit: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(channels.channels.len(), 1);
    assert_eq!(channels.channels[0].num_clients, Some(1));
    let info = api.info(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(info.gateway.unwrap().connections, 1);
    assert_eq!(info.nodes.len(), 1);

    api.unsubscribe_user(pb::UnsubscribeUserRequest {
        user: "alice".into(),
        channel: "chat:g".into(),
    })
    .await
    .unwrap();
    let notice = alice
        .wait_for(|f| f["type"] == "unsubscribed")
        .await
        .unwrap();
    assert_eq!(notice["channel"], "chat:g");

    api.disconnect_user(pb::DisconnectUserRequest {
        user: "alice".into(),
        code: Some(4321),
        reason: Some("maintenance".into()),
        reconnect: Some(true),
    })
    .await
    .unwrap();
    let closed = alice.closed().await.unwrap();
    assert_eq!(closed.code, Some(4321));
    assert_eq!(closed.disconnect().unwrap()["reconnect"], true);
}

#[tokio::test]
async fn bad_input_maps_to_grpc_statuses_with_the_same_codes() {
    let mut s = Settings::for_test();
    s.api.max_data_bytes = 100;
    let server = TestServer::start(s).await;
    let mut api = client(&server).await;
    assert_eq!(
        refusal(api.publish(publish("chat:a", "{nope", None)).await),
        (Code::InvalidArgument, "bad_request".into())
    );
    assert_eq!(
        refusal(api.publish(publish("bad name", "1", None)).await),
        (Code::InvalidArgument, "invalid_channel".into())
    );
    assert_eq!(
        refusal(
            api.publish(publish("chat:a", &format!("\"{}\"", "x".repeat(200)), None))
                .await
        ),
        (Code::OutOfRange, "too_large".into())
    );
    assert_eq!(
        refusal(api.publish(publish("chat:a", "1", Some(""))).await),
        (Code::InvalidArgument, "bad_request".into())
    );
    // Data that strict parsers cannot read (docs/protocol.md §8).
    // (A 101-digit number would be over this test's max_data_bytes.)
    for poison in ["1e999999", r#""\udc00""#, r#"{"n":[-1e400]}"#] {
        assert_eq!(
            refusal(api.publish(publish("chat:a", poison, None)).await),
            (Code::InvalidArgument, "bad_request".into()),
            "{poison}"
        );
    }
    assert_eq!(
        refusal(
            api.disconnect_user(pb::DisconnectUserRequest {
                user: "alice".into(),
                code: Some(100_000),
                reason: None,
                reconnect: None,
            })
            .await
        ),
        (Code::InvalidArgument, "bad_request".into())
    );
    assert_eq!(
        refusal(
            api.user_online(pb::UserRequest {
                user: String::new()
            })
            .await
        ),
        (Code::InvalidArgument, "invalid_user".into())
    );
    assert_eq!(
        refusal(
            api.history(pb::HistoryRequest {
                channel: "chat:a".into(),
                limit: Some(u64::MAX),
                since: None,
                reverse: false,
            })
            .await
        ),
        (Code::InvalidArgument, "bad_request".into())
    );
    // Messages over api.max_body_bytes are refused by the transport.
    let huge = "x".repeat(2 * 1024 * 1024);
    let status = api
        .publish(publish("chat:a", &format!("\"{huge}\""), None))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert_ne!(status.code(), Code::Internal);
}
