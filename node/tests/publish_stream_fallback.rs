//! A gateway's publishes to a broker that does not serve `PublishStream`
//! (an older broker): the gateway's broker client
//! ([`switchboard_cluster::RemoteBroker`]) falls back to unary `Publish`
//! calls, every publish succeeds and keeps its channel's order, and the
//! fallback is remembered: the stream is asked for once, not per publish.
//!
//! The broker is the real broker service on a real socket; only the
//! `PublishStream` method is answered UNIMPLEMENTED, as a server built
//! from an older proto answers a method it does not know.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use serde_json::value::RawValue;
use switchboard_cluster::{RemoteBroker, dialer::endpoint};
use switchboard_core::{Broker, ChannelName, HistoryRequest, Namespaces, PublishRequest};
use switchboard_node::{
    BrokerConfig, LocalBroker, authorization::PeerAuth, broker_service::BrokerService,
    server::incoming,
};
use switchboard_proto::broker::v1::broker_server::BrokerServer;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Status, body::Body, server::NamedService};

const WAIT: Duration = Duration::from_secs(10);
const STREAM_PATH: &str = "/switchboard.broker.v1.Broker/PublishStream";
const PUBLISH_PATH: &str = "/switchboard.broker.v1.Broker/Publish";

/// Calls of the two publish methods that reached the server.
#[derive(Default)]
struct Calls {
    stream: AtomicUsize,
    unary: AtomicUsize,
}

/// The real broker service, counting publish calls; with `refuse_stream`,
/// `PublishStream` is answered UNIMPLEMENTED without reaching it.
#[derive(Clone)]
struct Counted {
    inner: BrokerServer<BrokerService>,
    calls: Arc<Calls>,
    refuse_stream: bool,
}

impl NamedService for Counted {
    const NAME: &'static str = <BrokerServer<BrokerService> as NamedService>::NAME;
}

type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for Counted {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer {
        match request.uri().path() {
            STREAM_PATH => {
                self.calls.stream.fetch_add(1, Ordering::SeqCst);
                if self.refuse_stream {
                    let refused = Status::unimplemented("unknown method PublishStream").into_http();
                    return Box::pin(async move { Ok(refused) });
                }
            }
            PUBLISH_PATH => {
                self.calls.unary.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        Box::pin(self.inner.call(request))
    }
}

/// A broker on its own (every channel served here) on a new port; the
/// publish calls that reach it.
async fn serve(refuse_stream: bool) -> (std::net::SocketAddr, Arc<Calls>, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let broker = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
    let service = BrokerService::new(
        broker,
        None,
        PeerAuth::Insecure,
        TaskTracker::new(),
        stop.clone(),
    );
    let calls = Arc::new(Calls::default());
    let counted = Counted {
        inner: service.into_server(),
        calls: calls.clone(),
        refuse_stream,
    };
    let until = stop.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(counted)
            .serve_with_incoming_shutdown(incoming(listener), until.cancelled_owned()),
    );
    (addr, calls, stop)
}

fn client(addr: std::net::SocketAddr) -> RemoteBroker {
    let channel = endpoint(&addr.to_string()).unwrap().connect_lazy();
    RemoteBroker::from_channel(channel, TaskTracker::new(), CancellationToken::new())
}

fn publication(channel: &ChannelName, n: usize) -> PublishRequest {
    PublishRequest {
        channel: channel.clone(),
        from: String::new(),
        data: RawValue::from_string(n.to_string()).unwrap(),
        idempotency_key: None,
    }
}

/// Publishes `0..count` to `channel` one after the other; asserts each
/// succeeded at the next offset of one epoch, and that the channel's
/// history holds them in that order.
async fn publish_in_order(broker: &RemoteBroker, channel: &str, count: usize) {
    let channel = ChannelName::new(channel).unwrap();
    let mut positions = Vec::new();
    for n in 0..count {
        let position = tokio::time::timeout(WAIT, broker.publish(publication(&channel, n)))
            .await
            .expect("a publish is answered")
            .unwrap_or_else(|e| panic!("publish {n} to {channel} failed: {e}"));
        positions.push(position);
    }
    for (n, pair) in positions.windows(2).enumerate() {
        assert_eq!(pair[1].epoch, pair[0].epoch, "{channel}: epoch changed");
        assert_eq!(
            pair[1].offset,
            pair[0].offset + 1,
            "{channel}: publish {} not at the next offset",
            n + 1
        );
    }
    let history = broker
        .history(HistoryRequest {
            channel: channel.clone(),
            since: None,
            limit: count,
            reverse: false,
        })
        .await
        .unwrap();
    // Each publication is kept as the frame subscribers got.
    let data: Vec<serde_json::Value> = history
        .publications
        .iter()
        .map(|p| serde_json::from_slice::<serde_json::Value>(&p.frame).unwrap()["data"].clone())
        .collect();
    let sent: Vec<serde_json::Value> = (0..count).map(|n| n.into()).collect();
    assert_eq!(data, sent, "{channel}: history out of order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_broker_gets_unary_publishes_in_order_and_the_stream_is_not_retried() {
    let (addr, calls, stop) = serve(true).await;
    let broker = client(addr);

    publish_in_order(&broker, "older:first", 20).await;
    assert_eq!(
        calls.stream.load(Ordering::SeqCst),
        1,
        "the stream is asked for once"
    );
    assert_eq!(
        calls.unary.load(Ordering::SeqCst),
        20,
        "every publish, the first included, went as a unary call"
    );

    // Then several channels at once, each in its own order, from clones
    // of the client (as a gateway's connections hold it).
    let publishers: Vec<_> = (0..8)
        .map(|i| {
            let broker = broker.clone();
            tokio::spawn(async move { publish_in_order(&broker, &format!("older:c{i}"), 25).await })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    assert_eq!(
        calls.stream.load(Ordering::SeqCst),
        1,
        "the refusal is remembered: no stream asked for again"
    );
    assert_eq!(calls.unary.load(Ordering::SeqCst), 20 + 8 * 25);
    stop.cancel();
}

/// The same client and counting against a broker that serves the stream:
/// publishes go on one stream and no unary call, so the test above shows
/// the fallback and not a client that never used the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_broker_gets_the_publishes_on_one_stream() {
    let (addr, calls, stop) = serve(false).await;
    let broker = client(addr);

    publish_in_order(&broker, "current:first", 20).await;
    assert_eq!(calls.stream.load(Ordering::SeqCst), 1);
    assert_eq!(calls.unary.load(Ordering::SeqCst), 0);
    stop.cancel();
}
