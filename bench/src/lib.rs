//! `switchboard bench`: a load generator that speaks the client protocol.
//!
//! A run goes through phases, each waited for with a progress line per
//! second on stderr:
//!
//! 1. **connect**: the subscriber connections, from 127.0.0.x source
//!    addresses; the server's resident memory before and after gives the
//!    memory per connection;
//! 2. **subscribe**: each channel's subscribers, on distinct connections;
//! 3. **publish**: publisher connections write publications on a fixed
//!    schedule for the planned duration, open loop;
//! 4. **drain**: until every publication reached every subscriber, or
//!    the drain time is up.
//!
//! An idle run (no channels) holds the connections for the duration
//! instead of 2-4. [`run`] returns the summary for the caller (the
//! `switchboard` binary) to print.
//!
//! Before a run with channels, the tool times small writes on a loopback
//! socket of its own ([`baseline`]): the summary gives the server's CPU
//! per delivery in those writes, a figure that holds across machines;
//! then writes that each wake a reader asleep on another core
//! ([`waking`]), as a server's delivery does, and gives the ratio against
//! those too.
//!
//! # Layout
//!
//! - [`plan`]: the command line, and who subscribes and publishes where.
//! - [`phases`]: the phases above, in order, each noting what it measured.
//! - [`monitor`]: waiting for a phase, with the progress line.
//! - [`load`]: the [`Run`] every connection task shares, and the
//!   [`Phase`](load::Phase) they wait on.
//! - [`subscriber`]: subscriber connections: subscribe, then check and time
//!   every delivery.
//! - [`publisher`]: publisher connections: publish on a fixed schedule.
//! - [`dialer`]: connections from source addresses, with tokens.
//! - [`payload`]: publish frames with sequence and timestamp; server frames
//!   read back (both through `switchboard_core::frame`).
//! - [`tally`]: the shared counters.
//! - [`latency`]: sharded HDR histograms.
//! - [`baseline`]: the CPU cost of one small loopback `write()`, the yardstick.
//! - [`waking`]: the same write waking a reader on another core, the
//!   second yardstick.
//! - [`process`]: the server's (and the tool's) memory and CPU from `/proc`.
//! - [`report`]: the progress line, and the JSON summary made from the
//!   phases' readings and the final counts.

pub mod baseline;
pub mod dialer;
pub mod latency;
pub mod load;
pub mod monitor;
pub mod payload;
pub mod phases;
pub mod plan;
pub mod process;
pub mod publisher;
pub mod report;
pub mod subscriber;
pub mod tally;
pub mod waking;

use std::sync::Arc;

use self::{load::Run, monitor::Monitor, process::Process};
pub use self::{
    plan::{Plan, PlanError},
    report::Summary,
};

/// Runs the plan to its end and returns the summary.
pub async fn run(plan: Plan) -> Result<Summary, PlanError> {
    let layout = plan.layout()?;
    let servers = watched_servers(&plan, &layout);
    let (write, waking) = if plan.channels > 0 {
        (loopback_write().await, waking_write().await)
    } else {
        (None, None)
    };
    let run = Arc::new(Run::new(plan, &layout));
    let mut monitor = Monitor::new(run.clone(), servers, write);
    let readings = phases::drive(&run, layout.publishers, &mut monitor).await;
    Ok(Summary::new(
        &run.plan,
        &run.tally,
        &layout.sources,
        monitor.servers(),
        &readings,
        write,
        waking,
    ))
}

/// Times small loopback writes on a thread of their own, before any load.
async fn loopback_write() -> Option<baseline::LoopbackWrite> {
    let measured = tokio::task::spawn_blocking(|| baseline::measure(baseline::WRITES)).await;
    match measured {
        Ok(Ok(w)) => {
            eprintln!(
                "loopback write of {} bytes: {:.2} µs CPU, {:.2} µs wall ({} writes)",
                baseline::WRITE_BYTES,
                w.cpu_us,
                w.wall_us,
                w.writes
            );
            Some(w)
        }
        Ok(Err(e)) => {
            eprintln!("note: loopback write not measured: {e}");
            None
        }
        Err(e) => {
            eprintln!("note: loopback write not measured: {e}");
            None
        }
    }
}

/// Times small loopback writes that each wake a reader on another core,
/// before any load.
async fn waking_write() -> Option<waking::WakingWrite> {
    match tokio::task::spawn_blocking(|| waking::measure(waking::WRITES)).await {
        Ok(Ok(Some(w))) => {
            eprintln!(
                "loopback write waking a reader on core {} (writer on core {}): {:.2} µs CPU \
                 ({} writes, {:.2} wake-ups each)",
                w.reader_cpu, w.writer_cpu, w.cpu_us, w.writes, w.wakes_per_write
            );
            Some(w)
        }
        Ok(Ok(None)) => {
            eprintln!("note: waking write not measured: one core only");
            None
        }
        Ok(Err(e)) => {
            eprintln!("note: waking write not measured: {e}");
            None
        }
        Err(e) => {
            eprintln!("note: waking write not measured: {e}");
            None
        }
    }
}

/// The server processes to measure: those given, else the one listening
/// on the URL's port.
fn watched_servers(plan: &Plan, layout: &plan::Layout) -> Vec<Process> {
    let servers: Vec<Process> = if plan.server_pids.is_empty() {
        Process::listening_on(layout.server).into_iter().collect()
    } else {
        plan.server_pids
            .iter()
            .map(|&pid| Process { pid })
            .collect()
    };
    if servers.is_empty() {
        eprintln!(
            "note: no process found listening on {}; server memory and CPU are not reported (pass --server-pid)",
            layout.server
        );
    }
    servers
}
