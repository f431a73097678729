//! The run's phases in order, each waited for by the [`Monitor`]:
//! connect, subscribe, then publish and drain (or, for an idle run, hold),
//! and what each measured, for the summary.

use std::{sync::Arc, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use super::{
    load::{Phase, Run},
    monitor::Monitor,
    process::Process,
    publisher,
    report::{Readings, Traffic, Window},
    subscriber,
    tally::Tally,
};

/// Longest the connect or subscribe phase may take: a server that stops
/// answering ends the run with what it has rather than hanging it.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// How long after the publish phase is announced its schedule starts: a
/// short lead so every publisher sees the phase before its first deadline
/// comes due.
const PUBLISH_LEAD: Duration = Duration::from_millis(20);

/// Takes the run through every phase and then stops it: every connection
/// task has ended and settled its losses when this returns.
pub async fn drive(run: &Arc<Run>, publishers: usize, monitor: &mut Monitor) -> Readings {
    let mut readings = Readings {
        before: monitor.servers_usage(),
        ..Readings::default()
    };
    let mut tasks = JoinSet::new();
    connect(run, monitor, &mut tasks, &mut readings).await;
    subscribe(run, monitor, &mut readings).await;
    (readings.window, readings.traffic) = window(run, publishers, monitor, &mut tasks).await;
    run.stop.cancel();
    while tasks.join_next().await.is_some() {}
    readings
}

/// 1. Connect: opens the subscriber connections, then lets the server
///    settle before reading its memory.
async fn connect(
    run: &Arc<Run>,
    monitor: &mut Monitor,
    tasks: &mut JoinSet<()>,
    readings: &mut Readings,
) {
    let start = Instant::now();
    for conn in 0..run.plan.connections {
        tasks.spawn(subscriber::task(run.clone(), conn));
    }
    let n = run.plan.connections;
    monitor
        .wait("connect", Some(Instant::now() + PHASE_LIMIT), |t| {
            Tally::count(&t.connected) + Tally::count(&t.connect_failed) >= n
        })
        .await;
    readings.setup_seconds = start.elapsed().as_secs_f64();
    readings.established = Tally::count(&run.tally.connected);
    monitor.settle("settle", run.plan.settle).await;
    readings.connected = monitor.servers_usage();
}

/// 2. Subscribe (when there are channels): every subscriber requests its
///    subscriptions, then the server settles before its memory is read.
async fn subscribe(run: &Run, monitor: &mut Monitor, readings: &mut Readings) {
    let start = Instant::now();
    readings.subscribed = readings.connected.clone();
    if run.plan.channels > 0 {
        run.phase.send_replace(Phase::Subscribe);
        let want = run.plan.subscriptions();
        monitor
            .wait("subscribe", Some(Instant::now() + PHASE_LIMIT), |t| {
                Tally::count(&t.subscribed) + Tally::count(&t.subscribe_failed) >= want
            })
            .await;
        monitor.settle("settle", run.plan.settle).await;
        readings.subscribed = monitor.servers_usage();
    }
    readings.subscribe_seconds = start.elapsed().as_secs_f64();
}

/// The window CPU is measured over: 3. publish and 4. drain when there
/// are publishers; the hold of an idle run; nothing otherwise.
async fn window(
    run: &Arc<Run>,
    publishers: usize,
    monitor: &mut Monitor,
    tasks: &mut JoinSet<()>,
) -> (Window, Traffic) {
    let start = Instant::now();
    let (servers_start, tool_start) = (monitor.servers_usage(), Process::me().usage());
    let mut traffic = Traffic::default();
    if publishers > 0 {
        traffic = publish_and_drain(run, publishers, monitor, tasks).await;
    } else if run.plan.channels == 0 {
        let hold_end = Instant::now() + run.plan.duration;
        monitor.wait("hold", Some(hold_end), |_| false).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let window = Window {
        seconds,
        servers_start,
        servers_end: monitor.servers_usage(),
        tool_start,
        tool_end: Process::me().usage(),
    };
    (window, traffic)
}

/// 3. Publish: the publishers connect, then send on their schedules for
///    the planned duration; 4. drain: until every publication reached
///    every subscription, or the drain time is up.
async fn publish_and_drain(
    run: &Arc<Run>,
    publishers: usize,
    monitor: &mut Monitor,
    tasks: &mut JoinSet<()>,
) -> Traffic {
    for p in 0..publishers {
        tasks.spawn(publisher::task(run.clone(), p, publishers));
    }
    monitor
        .wait("publishers", Some(Instant::now() + PHASE_LIMIT), |t| {
            Tally::count(&t.publishers_connected) + Tally::count(&t.connect_failed) >= publishers
        })
        .await;
    let publish_start = Instant::now();
    let at = run.now_micros() + PUBLISH_LEAD.as_micros() as u64;
    run.phase.send_replace(Phase::Publish { at_micros: at });
    let publish_end = publish_start + run.plan.duration + PUBLISH_LEAD;
    monitor.wait("publish", Some(publish_end), |_| false).await;
    let drain_start = Instant::now();
    monitor
        .wait("drain", Some(drain_start + run.plan.drain), |t| {
            Tally::get(&t.delivered) >= t.expected()
        })
        .await;
    Traffic {
        publish_seconds: run.plan.duration.as_secs_f64(),
        drain_seconds: drain_start.elapsed().as_secs_f64(),
        delivery_seconds: publish_start.elapsed().as_secs_f64() - PUBLISH_LEAD.as_secs_f64(),
    }
}
