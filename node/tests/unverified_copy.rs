//! After a partition's heal, a broker does not serve what another broker
//! may hold a newer copy of while it cannot ask that broker.
//!
//! A copy of a channel that must be checked with another broker before it
//! is served again (docs/operations.md, "A partition"): while that broker
//! cannot be asked, the channel is refused, not served from the copy here,
//! for at most `Deferrals::WAIT`. At a partition's heal, gossip can have the
//! broker that went on with the channel down for a moment; serving the
//! copy here then acknowledged publications into an epoch about to end
//! (`tests/fault_scenarios.rs` `partitioned_broker`, R = 1: one
//! acknowledged publication never delivered, unannounced).
//!
//!
//! Nor does a broker that lately learned the others counted it out start a
//! channel anew while the channel's holder is missing from its view: the
//! new epoch, the newer of two copies, replaced the channel's history at
//! its holder when it came back (the same scenario: an acknowledged
//! publication missing).
//!
//! One real broker (`LocalBroker` and its `Handoff`) follows a cluster view
//! the test drives; the other brokers exist only in that view, at addresses
//! nobody listens on.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use switchboard_cluster::{
    dialer::TcpDialer,
    membership::{ClusterView, NodeId, NodeState, Role},
    ownership::Placement,
};
use switchboard_core::{BrokerError, ChannelName, Namespaces};
use switchboard_node::{
    BrokerConfig, LocalBroker, deferral::Deferrals, handoff::Handoff, local_broker::Holding,
};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A broker whose gRPC address refuses connections: a port just bound on
/// loopback and released.
fn broker(name: &str) -> NodeId {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    NodeId {
        name: name.to_owned(),
        role: Role::Broker,
        gossip: format!("127.0.0.1:{port}").parse().unwrap(),
        grpc: format!("127.0.0.1:{port}"),
        state: NodeState::Active,
        boot: 1,
        bump: 0,
    }
}

/// A channel `from` owns with all three brokers, and `to` without `from`.
fn channel_moving(three: &ClusterView, from: &str, to: &str) -> ChannelName {
    let mut two = ClusterView::new(broker(to));
    for b in ["b1", "b2", "b3"] {
        if b != from && b != to {
            two.up(broker(b));
        }
    }
    let (three, two) = (Placement::new(three, "b3"), Placement::new(&two, to));
    (0..1000)
        .map(|i| ChannelName::new(&format!("room:{i}")).unwrap())
        .find(|c| three.owner(c.as_str()) == Some(from) && two.owns(c.as_str()))
        .expect("some channel moves")
}

/// A channel b3 owns with all three brokers, and b2 without b3: the broker
/// b3 checks with after it was counted out.
fn channel(three: &ClusterView) -> ChannelName {
    channel_moving(three, "b3", "b2")
}

/// A channel b2 owns with all three brokers, and b3 without b2.
fn channel_of_b2(three: &ClusterView) -> ChannelName {
    channel_moving(three, "b2", "b3")
}

struct Fixture {
    broker: LocalBroker,
    handoff: Arc<Handoff>,
    view: watch::Sender<Arc<ClusterView>>,
    channel: ChannelName,
    shutdown: CancellationToken,
}

impl Fixture {
    /// b3 holds the channel, then learns the others counted it out (it had
    /// to refute a suspicion): its copy is to be checked with b2.
    async fn counted_out() -> Self {
        let mut three = ClusterView::new(broker("b3"));
        three.up(broker("b1"));
        three.up(broker("b2"));
        let channel = channel(&three);
        let broker = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
        let (view, rx) = watch::channel(Arc::new(three.clone()));
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let handoff = Handoff::start(
            &tracker,
            broker.clone(),
            ("b3", None),
            rx,
            shutdown.clone(),
            TcpDialer::shared(),
        );
        handoff.admit(&channel, None).await.unwrap();
        assert_eq!(broker.holding(&channel), Holding::State);
        three.doubted();
        let f = Self {
            broker,
            handoff,
            view,
            channel,
            shutdown,
        };
        f.show(three).await;
        assert_eq!(
            f.broker.holding(&f.channel),
            Holding::Unverified("b2".into())
        );
        f
    }

    /// Sends `view` and waits until the broker's placement follows it.
    async fn show(&self, view: ClusterView) {
        let mut placements = self.handoff.placement_changes();
        placements.borrow_and_update();
        self.view.send_replace(Arc::new(view));
        tokio::time::timeout(Duration::from_secs(5), placements.changed())
            .await
            .expect("the placement follows the view")
            .unwrap();
    }

    fn view(&self) -> ClusterView {
        (**self.view.borrow()).clone()
    }

    /// Gossip has b2 down (for a moment, at a heal).
    async fn b2_down(&self) {
        let mut view = self.view();
        view.down(view.get("b2").cloned().as_ref().unwrap());
        self.show(view).await;
    }

    /// `channel` asked for on b3's ring (which names b3 its owner): refused,
    /// and still `holding` here.
    async fn assert_refused(&self, channel: &ChannelName, holding: Holding) {
        assert!(self.handoff.placement().owns(channel.as_str()));
        let version = self.handoff.placement().ring_version();
        assert!(refused(self.handoff.admit(channel, Some(version)).await));
        assert_eq!(self.broker.holding(channel), holding);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn refused(r: Result<(), BrokerError>) -> bool {
    matches!(r, Err(BrokerError::NotOwner { owner: None }))
}

#[tokio::test]
async fn a_copy_to_check_with_a_broker_gossip_has_down_is_refused_not_served() {
    let f = Fixture::counted_out().await;
    f.b2_down().await;
    f.assert_refused(&f.channel, Holding::Unverified("b2".into()))
        .await;
}

#[tokio::test]
async fn a_copy_to_check_with_a_broker_that_cannot_be_reached_is_refused_not_served() {
    let f = Fixture::counted_out().await;
    // b2 is in the view, but nothing answers at its address (still cut off).
    f.assert_refused(&f.channel, Holding::Unverified("b2".into()))
        .await;
}

/// Never refused for good: past the wait, the broker it could not check
/// with is taken to be gone, and the copy here is served.
#[tokio::test]
async fn a_copy_never_checked_is_served_once_the_wait_is_over() {
    let f = Fixture::counted_out().await;
    f.b2_down().await;
    let first = Instant::now();
    assert!(refused(f.handoff.admit(&f.channel, None).await));
    let served = loop {
        match f.handoff.admit(&f.channel, None).await {
            Ok(()) => break first.elapsed(),
            Err(e) => assert!(refused(Err(e))),
        }
        assert!(first.elapsed() < Deferrals::WAIT * 3, "refused for good");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(served >= Deferrals::WAIT, "served after {served:?}");
    assert_eq!(f.broker.holding(&f.channel), Holding::State);
}

#[tokio::test]
async fn a_broker_counted_out_does_not_start_anew_a_channel_whose_holder_is_missing() {
    let f = Fixture::counted_out().await;
    let channel = channel_of_b2(&f.view());
    f.b2_down().await;
    f.assert_refused(&channel, Holding::Nothing).await;
}

/// A broker no one counted out starts a channel whose owner died in a new
/// epoch at once (R = 1's failover: no wait).
#[tokio::test]
async fn a_channel_whose_holder_died_starts_anew_at_once() {
    let mut three = ClusterView::new(broker("b3"));
    three.up(broker("b1"));
    three.up(broker("b2"));
    let channel = channel_of_b2(&three);
    let local = LocalBroker::new(BrokerConfig::default(), Namespaces::permissive());
    let (view, rx) = watch::channel(Arc::new(three.clone()));
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let handoff = Handoff::start(
        &TaskTracker::new(),
        local.clone(),
        ("b3", None),
        rx,
        shutdown,
        TcpDialer::shared(),
    );
    let mut placements = handoff.placement_changes();
    three.down(three.get("b2").cloned().as_ref().unwrap());
    view.send_replace(Arc::new(three));
    placements.changed().await.unwrap();
    handoff.admit(&channel, None).await.unwrap();
    assert_eq!(local.holding(&channel), Holding::State);
}
