//! [`BrokerError`] as a gRPC [`Status`] and back, for unary calls and for
//! the calls a stream carries (a refusal as the status the call would have
//! ended with alone).

use prost::Message;
use switchboard_core::{BrokerError, BrokerName, Position};
use switchboard_proto::broker::v1 as pb;
use tonic::{Code, Status};

use super::{position_from_pb, position_to_pb};

/// A [`BrokerError`] as a gRPC status: the code for gRPC's own clients,
/// the text for people, and the kind (with the owner a `NotOwner` names) as
/// an [`pb::ErrorDetail`] in the details, which [`broker_error`] reads back.
pub fn status(e: BrokerError) -> Status {
    use pb::ErrorKind as Kind;
    let message = e.to_string();
    let mut detail = pb::ErrorDetail::default();
    let code = match e {
        BrokerError::InvalidChannel(_) => {
            detail.set_kind(Kind::InvalidChannel);
            Code::InvalidArgument
        }
        BrokerError::UnknownNamespace => {
            detail.set_kind(Kind::UnknownNamespace);
            Code::NotFound
        }
        BrokerError::NotAvailable(what) => {
            detail.set_kind(match what {
                "presence" => Kind::PresenceNotAvailable,
                "history" => Kind::HistoryNotAvailable,
                _ => Kind::Unspecified,
            });
            Code::FailedPrecondition
        }
        BrokerError::PresenceFull(max) => {
            detail.set_kind(Kind::PresenceFull);
            detail.limit = max as u64;
            Code::ResourceExhausted
        }
        BrokerError::InvalidData => {
            detail.set_kind(Kind::InvalidData);
            Code::InvalidArgument
        }
        BrokerError::InvalidIdempotencyKey => {
            detail.set_kind(Kind::InvalidIdempotencyKey);
            Code::InvalidArgument
        }
        BrokerError::ShuttingDown => {
            detail.set_kind(Kind::ShuttingDown);
            Code::Unavailable
        }
        BrokerError::NotAttached => {
            detail.set_kind(Kind::NotAttached);
            Code::FailedPrecondition
        }
        BrokerError::NotOwner { owner } => {
            detail.set_kind(Kind::NotOwner);
            detail.owner = owner.map(String::from);
            Code::FailedPrecondition
        }
        BrokerError::OverCapacity => {
            detail.set_kind(Kind::OverCapacity);
            Code::ResourceExhausted
        }
        BrokerError::Unavailable(why) => {
            detail.set_kind(Kind::Unavailable);
            detail.reason = why;
            Code::Unavailable
        }
    };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

/// The reverse of [`status`]; anything without a known kind (a transport
/// failure, a timeout, a status not made by [`status`]) means the owner
/// could not be reached.
pub fn broker_error(s: &Status) -> BrokerError {
    use pb::ErrorKind as Kind;
    let unreachable = || BrokerError::Unavailable(format!("{:?}: {}", s.code(), s.message()));
    let Ok(detail) = pb::ErrorDetail::decode(s.details()) else {
        return unreachable();
    };
    match detail.kind() {
        Kind::InvalidChannel => BrokerError::InvalidChannel("rejected by the channel's owner"),
        Kind::UnknownNamespace => BrokerError::UnknownNamespace,
        Kind::PresenceNotAvailable => BrokerError::NotAvailable("presence"),
        Kind::HistoryNotAvailable => BrokerError::NotAvailable("history"),
        Kind::PresenceFull => {
            BrokerError::PresenceFull(usize::try_from(detail.limit).unwrap_or(usize::MAX))
        }
        Kind::InvalidData => BrokerError::InvalidData,
        Kind::InvalidIdempotencyKey => BrokerError::InvalidIdempotencyKey,
        Kind::ShuttingDown => BrokerError::ShuttingDown,
        Kind::NotAttached => BrokerError::NotAttached,
        Kind::NotOwner => BrokerError::NotOwner {
            owner: detail.owner.map(BrokerName::from),
        },
        Kind::Unavailable => BrokerError::Unavailable(detail.reason),
        Kind::OverCapacity => BrokerError::OverCapacity,
        Kind::Unspecified => unreachable(),
    }
}

/// A refusal as a [`pb::CallError`]: what a unary call's [`Status`] would
/// carry, so that a call on a stream fails as it would have alone.
pub fn call_error_to_pb(s: &Status) -> pb::CallError {
    pb::CallError {
        code: s.code() as i32,
        message: s.message().to_owned(),
        details: s.details().to_vec().into(),
    }
}

/// The reverse of [`call_error_to_pb`].
pub fn call_error_from_pb(e: pb::CallError) -> Status {
    Status::with_details(Code::from_i32(e.code), e.message, e.details)
}

/// One publish's outcome, as a [`pb::PublishStream`](pb) answer.
pub fn publish_answer_to_pb(id: u64, outcome: Result<Position, Status>) -> pb::PublishAnswer {
    use pb::publish_answer::Outcome;
    pb::PublishAnswer {
        id,
        outcome: Some(match outcome {
            Ok(p) => Outcome::Position(position_to_pb(&p)),
            Err(s) => Outcome::Error(call_error_to_pb(&s)),
        }),
    }
}

/// The reverse of [`publish_answer_to_pb`]: the answer's id and outcome,
/// its refusal as the [`Status`] a unary call would have ended with (which
/// [`broker_error`] reads).
pub fn publish_answer_from_pb(a: pb::PublishAnswer) -> (u64, Result<Position, Status>) {
    use pb::publish_answer::Outcome;
    let outcome = match a.outcome {
        Some(Outcome::Position(p)) => Ok(position_from_pb(Some(p))),
        Some(Outcome::Error(e)) => Err(call_error_from_pb(e)),
        None => Err(Status::internal("publish answer without an outcome")),
    };
    (a.id, outcome)
}
