//! Replicating a channel on R brokers with per-channel terms (issue 13), as
//! plain state machines: no IO, no clocks of their own (time is passed in),
//! so a simulation drives them as the broker will. The protocol, its
//! triggers and its invariants are in docs/replication.md.
//!
//! - [`term`]: [`Term`] and [`ReplicaConfig`] (leader, followers, witness;
//!   voters and majority).
//! - [`register`]: one broker's per-channel [`Register`] as a voter:
//!   promises, accepted configuration, leases granted.
//! - [`replica_log`]: a data replica's [`ReplicaLog`]: which appends it
//!   stores, what it drops on a new term, whether it may stand.
//! - [`leadership`]: the leader's [`Leadership`]: offsets, acknowledgements
//!   owed, commits, leases for reads.
//! - [`candidacy`]: one [`Candidacy`] for a new term: prepare, choose the
//!   next configuration, have it accepted.
//! - [`lost_majority`]: [`LostMajority`] (`broker.lost_majority`) and
//!   [`lost_majority::shortfall`]: whether a channel can be replicated
//!   from where a broker stands (a majority of its voters, R brokers).
//! - [`vigil`]: a follower's [`Vigil`] over the leaders it follows: when
//!   to stand for their channels (a reset stream or silence, once the
//!   leases it granted ran out).

pub mod candidacy;
pub mod leadership;
pub mod lost_majority;
pub mod register;
pub mod replica_log;
pub mod term;
pub mod vigil;

pub use candidacy::{Candidacy, Ineligible, Outcome, Plan};
pub use leadership::Leadership;
pub use lost_majority::{LostMajority, Shortfall};
pub use register::{Lease, PrepareReply, Refusal, Register};
pub use replica_log::{AppendReply, ReplicaLog};
pub use term::{MAX_VOTERS, ReplicaConfig, Term};
pub use vigil::Vigil;
