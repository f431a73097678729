//! The replication messages between the wire and the sans-IO core: one
//! place for each conversion, both ways.

use std::time::{Duration, Instant};

use switchboard_cluster::replication::{PrepareReply, Refusal, Term};
pub use switchboard_cluster::wire::{broker, config_from_pb, config_to_pb};
use switchboard_core::ChannelName;
use switchboard_proto::replica::v1 as pb;
use tonic::Status;

pub fn channel(name: &str) -> Result<ChannelName, Status> {
    switchboard_cluster::wire::channel(name)
}

pub fn prepare_to_pb(reply: PrepareReply) -> pb::PrepareReply {
    match reply {
        PrepareReply::Promised { log_end, config } => pb::PrepareReply {
            promised: true,
            log_end,
            config: config.as_ref().map(config_to_pb),
            ..Default::default()
        },
        PrepareReply::Refused {
            promised,
            config,
            reason,
        } => {
            let (refusal, left) = match reason {
                Refusal::Older => (pb::Refusal::Older, Duration::ZERO),
                Refusal::LeaseHeld { until } => (
                    pb::Refusal::LeaseHeld,
                    until.saturating_duration_since(std::time::Instant::now()),
                ),
            };
            pb::PrepareReply {
                promised: false,
                log_end: None,
                config: config.as_ref().map(config_to_pb),
                promised_term: promised.0,
                refusal: refusal as i32,
                lease_left_ms: left.as_millis() as u64,
            }
        }
    }
}

/// A voter's answer, as the candidacy reads it; a lease's end is counted
/// from `now` (when the answer arrived).
pub fn prepare_from_pb(reply: &pb::PrepareReply, now: Instant) -> Result<PrepareReply, Status> {
    let config = reply
        .config
        .as_ref()
        .map(|c| config_from_pb(Some(c)))
        .transpose()?;
    if reply.promised {
        return Ok(PrepareReply::Promised {
            log_end: reply.log_end,
            config,
        });
    }
    let reason = match reply.refusal() {
        pb::Refusal::LeaseHeld => Refusal::LeaseHeld {
            until: now + Duration::from_millis(reply.lease_left_ms),
        },
        _ => Refusal::Older,
    };
    Ok(PrepareReply::Refused {
        promised: Term(reply.promised_term),
        config,
        reason,
    })
}
