//! Standing for a new term of a channel: the async driver of one
//! [`Candidacy`]. It asks every voter of the base configuration to prepare
//! (this broker's own register directly, the others over gRPC), proposes
//! the configuration the candidacy chooses once a majority promised, and
//! has it accepted by a majority of the same voters. Voters that refuse
//! because a lease they granted is running are asked again when it ends;
//! the whole attempt gives up at its deadline.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream::FuturesUnordered};
use switchboard_cluster::replication::{Candidacy, Outcome, PrepareReply, ReplicaConfig, Term};
use switchboard_core::{BrokerName, ChannelName};
use switchboard_proto::replica::v1::{self as pb, replica_client::ReplicaClient};
use tonic::transport::Channel;

use super::{
    ReplicaError, Replicas,
    wire::{config_to_pb, prepare_from_pb},
};

/// How long one voter may take to answer one request.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Between rounds when no lease says how long to wait.
const RETRY: Duration = Duration::from_millis(100);

/// How this broker reaches another voter's replication service.
pub type Dial<'a> = &'a (dyn Fn(&BrokerName) -> Option<ReplicaClient<Channel>> + Sync);

/// How a candidacy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elected {
    /// This broker leads `config`; `catching_up` must hold its log before
    /// new publications commit.
    Leads {
        config: ReplicaConfig,
        catching_up: Vec<BrokerName>,
    },
    /// Someone is ahead (a later term was promised or decided); `config`
    /// is the newest configuration learnt, if any.
    Lost {
        newer_term: Term,
        config: Option<ReplicaConfig>,
    },
    /// No majority answered before the deadline.
    TimedOut,
}

/// Runs `candidacy` for `channel` until it is won, lost or `deadline`.
pub async fn stand(
    replicas: &Replicas,
    dial: Dial<'_>,
    channel: &ChannelName,
    mut candidacy: Candidacy,
    deadline: Instant,
) -> Result<Elected, ReplicaError> {
    let term = candidacy.term();
    let voters = candidacy.voters().to_vec();
    // Until the outcome is applied, this broker keeps its log (see
    // `Replicas::hand_replica`).
    let _standing = replicas.standing(channel)?;
    let mut proposal = None;
    while Instant::now() < deadline {
        let outcome = match &proposal {
            None => prepare_round(replicas, dial, channel, &mut candidacy, &voters, term).await?,
            Some(config) => {
                commit_round(replicas, dial, channel, &mut candidacy, &voters, config).await?
            }
        };
        match outcome {
            Outcome::Pending => {}
            Outcome::Propose(config) => {
                replicas.proposing(channel, config.term, candidacy.base().voters())?;
                proposal = Some(config);
                continue;
            }
            Outcome::Won {
                config,
                catching_up,
            } => {
                return Ok(if replicas.won(channel, &config)? {
                    Elected::Leads {
                        config,
                        catching_up,
                    }
                } else {
                    Elected::Lost {
                        newer_term: config.term,
                        config: Some(config),
                    }
                });
            }
            Outcome::Lost { newer_term, config } => {
                match &config {
                    Some(c) => replicas.learn(channel, c)?,
                    // A voter that retired the channel knows no
                    // configuration, only its floor: stand above it next.
                    None => replicas.outbid(channel, newer_term)?,
                }
                return Ok(Elected::Lost { newer_term, config });
            }
        }
        let wait = candidacy
            .lease_blocked_until()
            .map_or(RETRY, |until| {
                until.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_millis(10), RETRY.max(Duration::from_secs(1)));
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    Ok(Elected::TimedOut)
}

/// Asks every voter to prepare `term`; feeds the answers in as they come,
/// this broker's own first. A majority decides: a voter that cannot be
/// reached (frozen, cut off: no reset, so its call runs to
/// [`CALL_TIMEOUT`]) is not waited for. (Waiting for every answer cost a
/// frozen or cut-off owner's successor a second per election, one
/// timeout per round.)
async fn prepare_round(
    replicas: &Replicas,
    dial: Dial<'_>,
    channel: &ChannelName,
    candidacy: &mut Candidacy,
    voters: &[BrokerName],
    term: Term,
) -> Result<Outcome, ReplicaError> {
    let me = replicas.me().clone();
    let name = me.to_string();
    let own = replicas.prepare(channel, &me, term)?;
    let mut outcome = candidacy.on_prepare_reply(&me, &own);
    let mut asks: FuturesUnordered<_> = voters
        .iter()
        .filter(|v| **v != me)
        .map(|v| {
            let name = &name;
            async move {
                (
                    v.clone(),
                    remote_prepare(dial, v, channel, name, term).await,
                )
            }
        })
        .collect();
    while matches!(outcome, Outcome::Pending) {
        let Some((voter, reply)) = asks.next().await else {
            break;
        };
        if let Some(reply) = reply {
            outcome = candidacy.on_prepare_reply(&voter, &reply);
        }
    }
    Ok(outcome)
}

async fn remote_prepare(
    dial: Dial<'_>,
    voter: &BrokerName,
    channel: &ChannelName,
    me: &str,
    term: Term,
) -> Option<PrepareReply> {
    let mut client = dial(voter)?;
    let req = pb::PrepareRequest {
        channel: channel.to_string(),
        term: term.0,
        candidate: me.to_owned(),
    };
    let reply = tokio::time::timeout(CALL_TIMEOUT, client.prepare(req)).await;
    match reply {
        Ok(Ok(reply)) => prepare_from_pb(reply.get_ref(), Instant::now()).ok(),
        Ok(Err(e)) => {
            tracing::debug!(channel = %channel, voter = %voter, error = %e, "prepare refused");
            None
        }
        Err(_) => None,
    }
}

/// Asks every voter to accept `config`; feeds the answers in as they come,
/// this broker's own first, until a majority decides (as [`prepare_round`]).
async fn commit_round(
    replicas: &Replicas,
    dial: Dial<'_>,
    channel: &ChannelName,
    candidacy: &mut Candidacy,
    voters: &[BrokerName],
    config: &ReplicaConfig,
) -> Result<Outcome, ReplicaError> {
    let me = replicas.me().clone();
    let wire = config_to_pb(config);
    let (accepted, promised) = replicas.commit(channel, config)?;
    let mut outcome = candidacy.on_commit_reply(&me, accepted, promised);
    let mut asks: FuturesUnordered<_> = voters
        .iter()
        .filter(|v| **v != me)
        .map(|v| {
            let wire = wire.clone();
            async move {
                let mut client = dial(v)?;
                let req = pb::CommitRequest {
                    channel: channel.to_string(),
                    config: Some(wire),
                };
                let reply = tokio::time::timeout(CALL_TIMEOUT, client.commit(req)).await;
                let reply = reply.ok()?.ok()?.into_inner();
                Some((v.clone(), reply.accepted, Term(reply.promised)))
            }
        })
        .collect();
    while matches!(outcome, Outcome::Pending) {
        let Some(answer) = asks.next().await else {
            break;
        };
        if let Some((voter, accepted, promised)) = answer {
            outcome = candidacy.on_commit_reply(&voter, accepted, promised);
        }
    }
    Ok(outcome)
}
