//! Conversions between broker types and their protobuf form
//! (`switchboard.broker.v1`), and between [`BrokerError`] and gRPC
//! [`Status`] (in [`status`]): the one place either crosses the wire.

mod status;

pub use status::{
    broker_error, call_error_from_pb, call_error_to_pb, publish_answer_from_pb,
    publish_answer_to_pb, status,
};

use std::time::Duration;

use serde_json::value::RawValue;
use switchboard_proto::{broker::v1 as pb, replica::v1 as replica_pb};
use tonic::Status;

use crate::{
    ownership::{MAX_HANDED_KEYS, Release, Snapshot, SnapshotEntry},
    replication::{ReplicaConfig, Term},
};
use switchboard_core::{
    BrokerError, BrokerName, ChannelName, ChannelSummary, ChannelsRequest, ClientInfo, Control,
    Delivery, DeliveryKind, GatewayId, HistoryReply, HistoryRequest, NodeInfo, Position,
    PresencePage, PresenceRequest, PresenceStats, Publication, PublishRequest, SubscribeReply,
    SubscribeRequest,
};

pub fn snapshot_to_pb(s: &Snapshot) -> pb::ChannelSnapshot {
    pb::ChannelSnapshot {
        channel: s.channel.as_str().to_owned(),
        epoch: s.epoch.clone(),
        created_micros: s.created_micros,
        offset: s.offset,
        term: s.term.0,
        handed: s.handed.as_ref().map(config_to_pb),
        handed_committed: s.handed_committed,
        history: s
            .history
            .iter()
            .map(|e| pb::HistoryEntry {
                offset: e.offset,
                age_millis: e.age.as_millis() as u64,
                frame: e.frame.clone(),
            })
            .collect(),
        keys: s
            .keys
            .iter()
            .map(|(key, offset)| pb::HandedKey {
                key: key.clone(),
                offset: *offset,
            })
            .collect(),
    }
}

pub fn snapshot_from_pb(s: pb::ChannelSnapshot) -> Result<Snapshot, BrokerError> {
    Ok(Snapshot {
        channel: ChannelName::new(&s.channel)?,
        epoch: s.epoch,
        created_micros: s.created_micros,
        offset: s.offset,
        term: Term(s.term),
        handed: s
            .handed
            .as_ref()
            .map(|c| config_from_pb(Some(c)))
            .transpose()
            .map_err(|_| BrokerError::InvalidData)?,
        handed_committed: s.handed_committed,
        history: s
            .history
            .into_iter()
            .map(|e| SnapshotEntry {
                offset: e.offset,
                age: Duration::from_millis(e.age_millis),
                frame: e.frame,
            })
            .collect(),
        keys: s
            .keys
            .into_iter()
            .take(MAX_HANDED_KEYS)
            .map(|k| (k.key, k.offset))
            .collect(),
    })
}

/// A broker named on the wire.
pub fn broker(name: &str, what: &str) -> Result<BrokerName, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(format!("{what} names no broker")));
    }
    Ok(BrokerName::from(name))
}

/// A replication configuration from the wire (the replica service, and
/// a hand-over's [`Snapshot::handed`]).
pub fn config_from_pb(c: Option<&replica_pb::ReplicaConfig>) -> Result<ReplicaConfig, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument("no configuration"))?;
    let followers = c
        .followers
        .iter()
        .map(|f| broker(f, "a follower"))
        .collect::<Result<Vec<_>, _>>()?;
    if followers.len() > 2 {
        return Err(Status::invalid_argument("at most two followers"));
    }
    if c.holders.len() > MAX_HOLDERS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_HOLDERS} holders"
        )));
    }
    let holders = c
        .holders
        .iter()
        .map(|h| broker(h, "a holder"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReplicaConfig {
        term: Term(c.term),
        leader: broker(&c.leader, "the leader")?,
        followers,
        witness: (!c.witness.is_empty()).then(|| BrokerName::from(c.witness.as_str())),
        holders,
    })
}

/// A configuration for the wire.
pub fn config_to_pb(c: &ReplicaConfig) -> replica_pb::ReplicaConfig {
    replica_pb::ReplicaConfig {
        term: c.term.0,
        leader: c.leader.to_string(),
        followers: c.followers.iter().map(|f| f.to_string()).collect(),
        witness: c
            .witness
            .as_ref()
            .map(|w| w.to_string())
            .unwrap_or_default(),
        holders: c.holders.iter().map(|h| h.to_string()).collect(),
    }
}

/// Holders a configuration may name on the wire (one per broker a
/// channel's configurations ever named: far more than a cluster has).
pub const MAX_HOLDERS: usize = 256;

pub fn release_to_pb(r: &Release) -> pb::ReleaseReply {
    use pb::release_reply::Outcome;
    pb::ReleaseReply {
        outcome: Some(match r {
            Release::State(s) => Outcome::State(snapshot_to_pb(s)),
            Release::NotHeld => Outcome::NotHeld(pb::Empty {}),
            Release::MovedTo(to) => Outcome::MovedTo(to.clone()),
        }),
    }
}

pub fn release_from_pb(r: pb::ReleaseReply) -> Result<Release, BrokerError> {
    use pb::release_reply::Outcome;
    Ok(match r.outcome {
        Some(Outcome::State(s)) => Release::State(snapshot_from_pb(s)?),
        Some(Outcome::MovedTo(to)) => Release::MovedTo(to),
        Some(Outcome::NotHeld(_)) | None => Release::NotHeld,
    })
}

pub fn channel(name: &str) -> Result<ChannelName, Status> {
    ChannelName::new(name).map_err(status)
}

pub fn position_to_pb(p: &Position) -> pb::Position {
    pb::Position {
        offset: p.offset,
        epoch: p.epoch.clone(),
    }
}

pub fn position_from_pb(p: Option<pb::Position>) -> Position {
    p.map_or_else(
        || Position {
            offset: 0,
            epoch: String::new(),
        },
        |p| Position {
            offset: p.offset,
            epoch: p.epoch,
        },
    )
}

fn raw(json: String) -> Result<Box<RawValue>, BrokerError> {
    RawValue::from_string(json).map_err(|_| BrokerError::InvalidData)
}

pub fn presence_request_to_pb(r: &PresenceRequest) -> pb::PresenceRequest {
    pb::PresenceRequest {
        channel: r.channel.as_str().to_owned(),
        after: r.after.clone(),
        limit: u32::try_from(r.limit).unwrap_or(u32::MAX),
    }
}

pub fn presence_request_from_pb(r: pb::PresenceRequest) -> Result<PresenceRequest, Status> {
    Ok(PresenceRequest {
        channel: channel(&r.channel)?,
        after: r.after,
        limit: r.limit as usize,
    })
}

pub fn presence_page_to_pb(page: &PresencePage) -> pb::PresenceReply {
    pb::PresenceReply {
        clients: page.clients.iter().map(client_to_pb).collect(),
        next: page.next.clone(),
    }
}

pub fn presence_page_from_pb(r: pb::PresenceReply) -> Result<PresencePage, BrokerError> {
    Ok(PresencePage {
        clients: r
            .clients
            .into_iter()
            .map(client_from_pb)
            .collect::<Result<_, _>>()?,
        next: r.next,
    })
}

pub fn client_to_pb(c: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        client_id: c.client_id.clone(),
        user_id: c.user_id.clone(),
        info_json: c.info.as_ref().map(|i| i.get().to_owned()),
    }
}

pub fn client_from_pb(c: pb::ClientInfo) -> Result<ClientInfo, BrokerError> {
    Ok(ClientInfo {
        client_id: c.client_id,
        user_id: c.user_id,
        info: c.info_json.map(raw).transpose()?,
    })
}

pub fn delivery_to_pb(d: &Delivery) -> pb::Delivery {
    pb::Delivery {
        channel: d.channel.as_str().to_owned(),
        offset: match d.kind {
            DeliveryKind::Publication { offset } => Some(offset),
            // Resets are made by a gateway for its own clients; they never
            // cross the wire.
            DeliveryKind::Event | DeliveryKind::Control | DeliveryKind::Reset { .. } => None,
        },
        control: d.kind == DeliveryKind::Control,
        frame: d.frame.clone(),
        published_at_micros: d.published_at_micros,
        batch: Vec::new(),
        term: d.term,
    }
}

/// The deliveries one stream message carries, in order: itself, or its
/// batch (`node::delivery_stream`).
pub fn deliveries_from_pb(
    mut d: pb::Delivery,
) -> impl Iterator<Item = Result<Delivery, BrokerError>> {
    let batch = std::mem::take(&mut d.batch);
    let single = batch.is_empty().then_some(d);
    single.into_iter().chain(batch).map(delivery_from_pb)
}

pub fn delivery_from_pb(d: pb::Delivery) -> Result<Delivery, BrokerError> {
    Ok(Delivery {
        channel: ChannelName::new(&d.channel)?,
        kind: match (d.offset, d.control) {
            (Some(offset), _) => DeliveryKind::Publication { offset },
            (None, true) => DeliveryKind::Control,
            (None, false) => DeliveryKind::Event,
        },
        frame: d.frame,
        published_at_micros: d.published_at_micros,
        term: d.term,
    })
}

pub fn publication_to_pb(p: Publication) -> pb::Publication {
    pb::Publication {
        offset: p.offset,
        frame: p.frame,
    }
}

pub fn publication_from_pb(p: pb::Publication) -> Publication {
    Publication {
        offset: p.offset,
        frame: p.frame,
    }
}

pub fn subscribe_to_pb(r: &SubscribeRequest) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        gateway: r.gateway.as_str().to_owned(),
        channel: r.channel.as_str().to_owned(),
        since: r.since.as_ref().map(position_to_pb),
        client: r.client.as_ref().map(client_to_pb),
    }
}

pub fn subscribe_from_pb(r: pb::SubscribeRequest) -> Result<SubscribeRequest, Status> {
    Ok(SubscribeRequest {
        gateway: GatewayId::from(r.gateway.as_str()),
        channel: channel(&r.channel)?,
        since: r.since.map(|p| Position {
            offset: p.offset,
            epoch: p.epoch,
        }),
        client: r.client.map(client_from_pb).transpose().map_err(status)?,
    })
}

pub fn subscribe_reply_to_pb(r: SubscribeReply) -> pb::SubscribeReply {
    pb::SubscribeReply {
        position: Some(position_to_pb(&r.position)),
        recoverable: r.recoverable,
        recovered: r.recovered,
        publications: r.publications.into_iter().map(publication_to_pb).collect(),
        join_leave: r.join_leave,
        term: r.term,
    }
}

pub fn subscribe_reply_from_pb(r: pb::SubscribeReply) -> SubscribeReply {
    SubscribeReply {
        position: position_from_pb(r.position),
        recoverable: r.recoverable,
        recovered: r.recovered,
        publications: r
            .publications
            .into_iter()
            .map(publication_from_pb)
            .collect(),
        join_leave: r.join_leave,
        term: r.term,
    }
}

pub fn publish_to_pb(r: &PublishRequest) -> pb::PublishRequest {
    pb::PublishRequest {
        channel: r.channel.as_str().to_owned(),
        from: r.from.clone(),
        data_json: r.data.get().to_owned(),
        idempotency_key: r.idempotency_key.clone(),
    }
}

pub fn publish_from_pb(r: pb::PublishRequest) -> Result<PublishRequest, Status> {
    Ok(PublishRequest {
        channel: channel(&r.channel)?,
        from: r.from,
        data: raw(r.data_json).map_err(status)?,
        idempotency_key: r.idempotency_key,
    })
}

pub fn history_to_pb(r: &HistoryRequest) -> pb::HistoryRequest {
    pb::HistoryRequest {
        channel: r.channel.as_str().to_owned(),
        since: r.since.as_ref().map(position_to_pb),
        limit: r.limit as u64,
        reverse: r.reverse,
    }
}

pub fn history_from_pb(r: pb::HistoryRequest) -> Result<HistoryRequest, Status> {
    Ok(HistoryRequest {
        channel: channel(&r.channel)?,
        since: r.since.map(|p| Position {
            offset: p.offset,
            epoch: p.epoch,
        }),
        limit: usize::try_from(r.limit).unwrap_or(usize::MAX),
        reverse: r.reverse,
    })
}

pub fn history_reply_to_pb(r: HistoryReply) -> pb::HistoryReply {
    pb::HistoryReply {
        position: Some(position_to_pb(&r.position)),
        publications: r.publications.into_iter().map(publication_to_pb).collect(),
        complete: r.complete,
    }
}

pub fn history_reply_from_pb(r: pb::HistoryReply) -> HistoryReply {
    HistoryReply {
        position: position_from_pb(r.position),
        publications: r
            .publications
            .into_iter()
            .map(publication_from_pb)
            .collect(),
        complete: r.complete,
    }
}

pub fn stats_to_pb(s: PresenceStats) -> pb::PresenceStatsReply {
    pb::PresenceStatsReply {
        num_clients: s.num_clients as u64,
        num_users: s.num_users as u64,
    }
}

pub fn stats_from_pb(s: pb::PresenceStatsReply) -> PresenceStats {
    PresenceStats {
        num_clients: s.num_clients as usize,
        num_users: s.num_users as usize,
    }
}

pub fn control_to_pb(channel: &ChannelName, command: &Control) -> pb::ControlRequest {
    pb::ControlRequest {
        channel: channel.as_str().to_owned(),
        command: command.encode(),
    }
}

pub fn control_from_pb(r: pb::ControlRequest) -> Result<(ChannelName, Control), Status> {
    let command =
        Control::decode(&r.command).map_err(|_| Status::invalid_argument("invalid_control"))?;
    Ok((channel(&r.channel)?, command))
}

pub fn channels_to_pb(r: &ChannelsRequest) -> pb::ChannelsRequest {
    pb::ChannelsRequest {
        prefix: r.prefix.clone(),
        limit: r.limit as u64,
    }
}

pub fn channels_from_pb(r: pb::ChannelsRequest) -> ChannelsRequest {
    ChannelsRequest {
        prefix: r.prefix,
        limit: usize::try_from(r.limit).unwrap_or(usize::MAX),
    }
}

pub fn summary_to_pb(s: &ChannelSummary) -> pb::ChannelSummary {
    pb::ChannelSummary {
        channel: s.channel.as_str().to_owned(),
        presence: s.presence.map(|p| pb::PresenceCounts {
            num_clients: p.num_clients as u64,
            num_users: p.num_users as u64,
        }),
    }
}

pub fn summary_from_pb(s: pb::ChannelSummary) -> Result<ChannelSummary, BrokerError> {
    Ok(ChannelSummary {
        channel: ChannelName::new(&s.channel)?,
        presence: s.presence.map(|p| PresenceStats {
            num_clients: p.num_clients as usize,
            num_users: p.num_users as usize,
        }),
    })
}

pub fn node_to_pb(n: &NodeInfo) -> pb::NodeInfo {
    pb::NodeInfo {
        name: n.name.clone(),
        version: n.version.clone(),
        uptime_millis: n.uptime.as_millis() as u64,
        num_channels: n.num_channels as u64,
        num_active_channels: n.num_active_channels as u64,
        num_gateways: n.num_gateways as u64,
        num_clients: n.num_clients as u64,
        num_publications: n.num_publications,
    }
}

pub fn node_from_pb(n: pb::NodeInfo) -> NodeInfo {
    NodeInfo {
        name: n.name,
        version: n.version,
        uptime: std::time::Duration::from_millis(n.uptime_millis),
        num_channels: n.num_channels as usize,
        num_active_channels: n.num_active_channels as usize,
        num_gateways: n.num_gateways as usize,
        num_clients: n.num_clients as usize,
        num_publications: n.num_publications,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_kinds_survive_the_round_trip() {
        for kind in [
            DeliveryKind::Publication { offset: 7 },
            DeliveryKind::Event,
            DeliveryKind::Control,
        ] {
            let d = Delivery {
                channel: ChannelName::new("#alice").unwrap(),
                kind,
                frame: bytes::Bytes::from_static(b"{}"),
                published_at_micros: 1,
                term: 4,
            };
            let back = delivery_from_pb(delivery_to_pb(&d)).unwrap();
            assert_eq!((back.kind, back.term), (kind, 4));
        }
    }

    #[test]
    fn a_snapshot_survives_the_round_trip_with_its_keys_capped() {
        let mut s = Snapshot {
            channel: ChannelName::new("orders:42").unwrap(),
            epoch: "e1".into(),
            created_micros: 5,
            offset: 2,
            history: vec![SnapshotEntry {
                offset: 2,
                age: Duration::from_millis(30),
                frame: bytes::Bytes::from_static(b"{}"),
            }],
            keys: vec![("order-42-shipped".into(), 2)],
            term: crate::replication::Term(3),
            handed: None,
            handed_committed: None,
        };
        assert_eq!(snapshot_from_pb(snapshot_to_pb(&s)).unwrap(), s);
        s.handed = Some(ReplicaConfig {
            term: Term(3),
            leader: "b2".into(),
            followers: vec!["b3".into()],
            witness: Some("b1".into()),
            holders: vec![],
        });
        assert_eq!(snapshot_from_pb(snapshot_to_pb(&s)).unwrap(), s);
        s.handed_committed = Some(1);
        assert_eq!(snapshot_from_pb(snapshot_to_pb(&s)).unwrap(), s);
        s.keys = (0..MAX_HANDED_KEYS as u64 + 5)
            .map(|o| (o.to_string(), o))
            .collect();
        assert_eq!(
            snapshot_from_pb(snapshot_to_pb(&s)).unwrap().keys.len(),
            MAX_HANDED_KEYS
        );
    }

    #[test]
    fn a_streamed_refusal_reads_back_as_the_unary_one() {
        for e in [
            BrokerError::NotOwner {
                owner: Some("b2".into()),
            },
            BrokerError::InvalidIdempotencyKey,
            BrokerError::Unavailable("fenced".into()),
            BrokerError::OverCapacity,
        ] {
            let (id, outcome) =
                publish_answer_from_pb(publish_answer_to_pb(7, Err(status(e.clone()))));
            assert_eq!(id, 7);
            assert_eq!(broker_error(&outcome.unwrap_err()), e);
        }
        let refused = Status::permission_denied("publish: no");
        let (_, outcome) = publish_answer_from_pb(publish_answer_to_pb(1, Err(refused.clone())));
        let back = outcome.unwrap_err();
        assert_eq!(
            (back.code(), back.message()),
            (refused.code(), refused.message())
        );
        assert_eq!(broker_error(&back), broker_error(&refused));
        let at = Position {
            offset: 3,
            epoch: "e".into(),
        };
        let (id, outcome) = publish_answer_from_pb(publish_answer_to_pb(2, Ok(at.clone())));
        assert_eq!((id, outcome.unwrap()), (2, at));
    }

    #[test]
    fn errors_survive_the_round_trip() {
        for e in [
            BrokerError::UnknownNamespace,
            BrokerError::InvalidData,
            BrokerError::NotAvailable("presence"),
            BrokerError::NotAvailable("history"),
            BrokerError::PresenceFull(10_000),
            BrokerError::ShuttingDown,
            BrokerError::NotAttached,
            BrokerError::InvalidIdempotencyKey,
            BrokerError::OverCapacity,
            BrokerError::NotOwner {
                owner: Some("b2".into()),
            },
            BrokerError::NotOwner { owner: None },
            BrokerError::Unavailable("restarting".into()),
        ] {
            assert_eq!(broker_error(&status(e.clone())), e);
        }
        assert!(matches!(
            broker_error(&status(BrokerError::InvalidChannel("too long"))),
            BrokerError::InvalidChannel(_)
        ));
        assert!(matches!(
            broker_error(&Status::deadline_exceeded("slow")),
            BrokerError::Unavailable(_)
        ));
        // Text is for people: a status whose message looks like a kind is
        // still not one.
        assert!(matches!(
            broker_error(&Status::failed_precondition("not_owner: b2")),
            BrokerError::Unavailable(_)
        ));
    }
}
