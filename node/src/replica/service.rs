//! `switchboard.replica.v1.Replica` over [`Replicas`]: proto in, the
//! sans-IO core's answers out. Every request names the broker it acts as;
//! over mutual TLS that must be the caller ([`crate::authorization`]).

use std::sync::Arc;

use switchboard_cluster::{
    replication::{AppendReply, Term},
    tls::TlsPeer,
};
use switchboard_proto::replica::v1::{
    self as pb, replica_server, replicate_reply::Kind as ReplyKind,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status, Streaming};

use super::{
    Append, Entry, Epoch, ReplicaError, Replicas,
    retirement::Retired,
    wire::{broker, channel, config_from_pb, prepare_to_pb},
};
use crate::authorization::{PeerAuth, Rpc, authorize, check};

/// Replies queued on one leader's stream before it waits for the reader.
const STREAM_CAPACITY: usize = 1024;

pub struct ReplicaService {
    replicas: Arc<Replicas>,
    auth: PeerAuth,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl ReplicaService {
    pub fn new(
        replicas: Arc<Replicas>,
        auth: PeerAuth,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            replicas,
            auth,
            tasks,
            shutdown,
        }
    }

    pub fn into_server(self) -> replica_server::ReplicaServer<Self> {
        replica_server::ReplicaServer::new(self).max_decoding_message_size(16 << 20)
    }
}

fn status(e: ReplicaError) -> Status {
    match e {
        ReplicaError::NoDataDir => Status::failed_precondition(e.to_string()),
        ReplicaError::Store(_) => {
            tracing::error!(error = %e, "replication register not saved");
            Status::unavailable(e.to_string())
        }
        ReplicaError::Channel(e) => switchboard_cluster::wire::status(e),
        ReplicaError::Ineligible(_) | ReplicaError::NoBrokers | ReplicaError::NotLeader => {
            Status::failed_precondition(e.to_string())
        }
    }
}

/// Answers one message of a leader's stream.
fn replicate_one(
    replicas: &Replicas,
    req: pb::ReplicateRequest,
) -> Result<pb::ReplicateReply, Status> {
    let ch = channel(&req.channel)?;
    let leader = broker(&req.leader, "the stream")?;
    let mut echo = 0;
    let (term, kind) = match req.kind {
        Some(pb::replicate_request::Kind::Adopt(a)) => {
            let config = config_from_pb(a.config.as_ref())?;
            if config.leader != leader {
                return Err(Status::invalid_argument(
                    "adopt: the sender is not the leader",
                ));
            }
            let epoch = Epoch {
                id: a.epoch,
                created_micros: a.created_micros,
            };
            let adopted = replicas
                .adopt(&ch, &config, a.leader_end, epoch)
                .map_err(status)?;
            (config.term, ReplyKind::Adopted(adopted))
        }
        Some(pb::replicate_request::Kind::Append(a)) => {
            let append = Append {
                term: Term(a.term),
                offset: a.offset,
                entry: Entry {
                    frame: a.frame,
                    idempotency_key: (!a.idempotency_key.is_empty()).then_some(a.idempotency_key),
                    published_micros: a.published_micros,
                },
                committed: a.committed,
                log_start: a.log_start,
            };
            let kind = match replicas.append(&ch, append).map_err(status)? {
                AppendReply::Stored { end } => ReplyKind::Stored(end),
                AppendReply::Stale { promised } => ReplyKind::Stale(promised.0),
                AppendReply::Gap { next } => ReplyKind::Gap(next),
                AppendReply::NotAdopted => ReplyKind::NotAdopted(true),
            };
            (Term(a.term), kind)
        }
        Some(pb::replicate_request::Kind::Heartbeat(h)) => {
            let lease = replicas.renew(&ch, &leader, Term(h.term)).map_err(status)?;
            let ms = lease.map_or(0, |l| l.as_millis().max(1) as u64);
            echo = h.sent_micros;
            (Term(h.term), ReplyKind::LeaseMs(ms))
        }
        None => return Err(Status::invalid_argument("an empty replication message")),
    };
    Ok(pb::ReplicateReply {
        channel: req.channel,
        term: term.0,
        kind: Some(kind),
        heartbeat_sent_micros: echo,
    })
}

type ReplyStream = ReceiverStream<Result<pb::ReplicateReply, Status>>;

#[tonic::async_trait]
impl replica_server::Replica for ReplicaService {
    async fn prepare(
        &self,
        request: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::PrepareReply>, Status> {
        check(
            self.auth,
            &request,
            Rpc::Prepare,
            Some(&request.get_ref().candidate),
        )?;
        let req = request.into_inner();
        let ch = channel(&req.channel)?;
        let candidate = broker(&req.candidate, "prepare")?;
        let reply = self
            .replicas
            .prepare(&ch, &candidate, Term(req.term))
            .map_err(status)?;
        Ok(Response::new(prepare_to_pb(reply)))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitReply>, Status> {
        let leader = request.get_ref().config.as_ref().map(|c| c.leader.clone());
        check(self.auth, &request, Rpc::Commit, leader.as_deref())?;
        let req = request.into_inner();
        let ch = channel(&req.channel)?;
        let config = config_from_pb(req.config.as_ref())?;
        let (accepted, promised) = self.replicas.commit(&ch, &config).map_err(status)?;
        Ok(Response::new(pb::CommitReply {
            accepted,
            promised: promised.0,
        }))
    }

    async fn retire(
        &self,
        request: Request<pb::RetireRequest>,
    ) -> Result<Response<pb::RetireReply>, Status> {
        check(
            self.auth,
            &request,
            Rpc::Retire,
            Some(&request.get_ref().leader),
        )?;
        let req = request.into_inner();
        let ch = channel(&req.channel)?;
        let leader = broker(&req.leader, "retire")?;
        let reply = match self
            .replicas
            .retire(&ch, Term(req.term), &leader, req.end)
            .map_err(status)?
        {
            Retired::Forgotten => pb::RetireReply {
                forgotten: true,
                promised: 0,
                configured: 0,
            },
            Retired::Kept {
                promised,
                configured,
            } => pb::RetireReply {
                forgotten: false,
                promised: promised.0,
                configured: configured.0,
            },
        };
        Ok(Response::new(reply))
    }

    type ReplicateStream = ReplyStream;

    async fn replicate(
        &self,
        request: Request<Streaming<pb::ReplicateRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        check(self.auth, &request, Rpc::Replicate, None)?;
        let caller = request
            .extensions()
            .get::<TlsPeer>()
            .map(|p| p.identity.clone());
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let (replicas, auth, shutdown) = (self.replicas.clone(), self.auth, self.shutdown.clone());
        self.tasks.spawn(async move {
            let mut leader = None;
            loop {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    next = incoming.message() => next,
                };
                let req = match next {
                    Ok(Some(req)) => req,
                    Ok(None) | Err(_) => {
                        // A reset stream is a lost leader, without gossip.
                        if let Some(leader) = &leader {
                            replicas.stream_from(leader, false);
                        }
                        return;
                    }
                };
                if leader.is_none() {
                    let name = switchboard_core::BrokerName::from(req.leader.as_str());
                    replicas.stream_from(&name, true);
                    leader = Some(name);
                }
                // Every message names its leader: it must be the caller.
                let reply =
                    match authorize(auth, caller.as_ref(), Rpc::Replicate, Some(&req.leader)) {
                        Ok(()) => replicate_one(&replicas, req),
                        Err(denied) => Err(Status::permission_denied(denied.to_string())),
                    };
                let end = reply.is_err();
                if tx.send(reply).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
