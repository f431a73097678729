//! A seeded randomized model of docs/replication.md, driving the sans-IO
//! core in `switchboard_cluster::replication` the way brokers will: 3 to 5
//! brokers, one channel, R = 1 to 3, a network that delays, reorders, drops
//! and duplicates messages, crashes and restarts (registers are durable, logs
//! and leadership are not), frozen brokers whose leases run out,
//! candidates standing concurrently on whatever they believe is down, and
//! planned moves: a leader that steps down at its committed offset and
//! hands its log to another broker, which stands on the leader's term; and
//! hand-backs: a follower complete for its term hands its log to the
//! term's leader, restarted without its own, which stands on it.
//!
//! After every event it checks the invariants listed at the end of
//! docs/replication.md; a violation names the seed and the last events.
//! `a_voter_that_votes_twice_is_caught` shows the checker is not vacuous.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque},
    fmt,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use switchboard_cluster::replication::{
    AppendReply, Candidacy, Leadership, Outcome, Plan, PrepareReply, Refusal, Register,
    ReplicaConfig, ReplicaLog, Term,
};
use switchboard_core::BrokerName;

const LEASE: Duration = Duration::from_millis(800);
/// A candidacy that got nowhere in this long is abandoned.
const CANDIDACY_TIMEOUT: Duration = Duration::from_millis(1200);
const TRACE: usize = 40;
const MAX_BROKERS: usize = 5;
/// A leader sends unacknowledged appends again after this long (a stream
/// that broke and came back).
const RESEND_AFTER: Duration = Duration::from_millis(150);

/// Bugs the model can inject, to show the checker catches them.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// A voter asked by a second candidate for a term it promised forgets
    /// the first promise.
    vote_twice: bool,
    /// Skip the direct check of invariant 3 (one prepare per term), so that
    /// the consequences of a double vote must be caught downstream.
    skip_vote_check: bool,
    /// A first candidacy stands at the voters its own view of the ring
    /// names (the order less the brokers it believes down), not at those
    /// the order over every broker names (`Plan::first`).
    live_first_voters: bool,
    /// A follower hands its log to an owner without first promising it
    /// the next term (and does so ten times as often).
    owner_without_promise: bool,
    /// A leader retiring the channel asks the other brokers to forget it
    /// first and forgets it itself last, leading on meanwhile (session
    /// 18's first design).
    retire_voters_first: bool,
    /// A follower adopting a term of another epoch keeps its log of the
    /// ended one (session 19 found it: a voter told of the retirement
    /// only after it had joined the next incarnation).
    keep_ended_epochs: bool,
    /// A candidate remembers the configuration it proposed as proposed to
    /// that configuration's own voters, not its base's: the named leader
    /// of a configuration it never led stands on it with those alone, as
    /// before session 19 (model seed 45,648 of 60,000, and 57,463 without
    /// retirements: a configuration accepted only by its candidate, naming
    /// it alone, let it decide a term its base's voters decided too).
    unled_on_own_voters: bool,
    /// A broker forgets an abandoned promise (`abandon`) without raising
    /// its floor to it.
    abandon_without_floor: bool,
}

#[derive(Debug, Clone)]
enum Msg {
    Prepare {
        term: Term,
    },
    PrepareReply {
        term: Term,
        reply: PrepareReply,
    },
    /// The accept round of a candidacy.
    Commit {
        config: ReplicaConfig,
    },
    CommitReply {
        term: Term,
        accepted: bool,
        promised: Term,
    },
    /// The winner to every member: adopt this configuration, in its log's
    /// epoch.
    Adopt {
        config: ReplicaConfig,
        leader_end: u64,
        epoch: u64,
    },
    Append {
        term: Term,
        offset: u64,
        payload: u64,
        committed: u64,
    },
    AppendReply {
        term: Term,
        reply: AppendReply,
    },
    Heartbeat {
        term: Term,
        sent_at: Instant,
    },
    HeartbeatReply {
        term: Term,
        sent_at: Instant,
        granted: bool,
    },
    /// The leader retires the idle channel: forget it unless you know a
    /// later configuration, lead or stand, or hold more than `end`.
    Retire {
        term: Term,
        end: u64,
    },
    RetireReply {
        term: Term,
        end: u64,
        /// Forgotten, or kept for a later configuration (nothing more to
        /// tell).
        forgotten: bool,
    },
    /// A leader that stepped down at its committed offset hands its log
    /// (every offset from `first` up to that one) and configuration over.
    Handed {
        config: ReplicaConfig,
        first: u64,
        entries: Vec<u64>,
        /// From a follower to its restarted leader (a hand-back), or to
        /// an owner once the leader is lost to it, not from a leader
        /// stepping down: the offset the follower knew committed.
        back: Option<u64>,
        /// From a follower to an owner other than its leader.
        owner: bool,
        epoch: Option<u64>,
    },
}

#[derive(Debug, Clone)]
struct Envelope {
    /// When the network hands it over (if the receiver is up and not
    /// frozen then; a frozen receiver gets it when it thaws).
    at: Instant,
    from: usize,
    to: usize,
    msg: Msg,
}

/// An envelope in the network, ordered by when it is due (ties broken at
/// random when sent).
#[derive(Debug)]
struct Queued {
    at: Instant,
    tie: u64,
    envelope: Envelope,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.tie) == (other.at, other.tie)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.tie).cmp(&(other.at, other.tie))
    }
}

/// What the trace keeps: formatted only when a run fails.
#[derive(Debug, Clone)]
enum Event {
    Delivered(Envelope),
    Dropped(Envelope),
    Note(String),
}

struct Broker {
    name: BrokerName,
    up: bool,
    frozen_until: Option<Instant>,
    register: Register,
    log: ReplicaLog<u64>,
    leadership: Option<Leadership>,
    candidacy: Option<(Candidacy, Instant)>,
    /// The last handed log it kept was handed back by a follower.
    handed_back: bool,
    /// ... by a follower whose leader was lost to it, to this broker as
    /// the channel's owner.
    handed_as_owner: bool,
    /// The highest promise it forgot (durable).
    floor: Term,
    /// The epoch its log is of (the channel's incarnation: a new one after
    /// a retirement starts at offset 1 again); none for an empty log.
    epoch: Option<u64>,
    /// The channel it retired as leader: the term, its log end then, and
    /// the brokers named that have not confirmed it yet.
    untold: Option<(Term, u64, BTreeSet<usize>)>,
}

impl Broker {
    /// Forgets the channel, retired in `term`: its register gives way to
    /// one that votes only above every promise it forgot and that term
    /// (a term is never won twice, even across incarnations).
    fn forget(&mut self, term: Term) {
        self.floor = self.floor.max(self.register.promised()).max(term);
        self.register = Register::above(LEASE, self.floor);
        self.log = ReplicaLog::above(self.floor);
        self.epoch = None;
        self.leadership = None;
        self.handed_back = false;
        self.handed_as_owner = false;
    }
}

/// Which invariant of docs/replication.md broke, and how.
#[derive(Debug)]
struct Violation {
    seed: u64,
    invariant: u8,
    detail: String,
    trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: invariant {} broken: {}",
            self.seed, self.invariant, self.detail
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    commits: u64,
    terms_won: u64,
    reads: u64,
    crashes: u64,
    /// Terms won by a broker standing on a log handed to it.
    handed_wins: u64,
    /// Follower logs handed back to their restarted leader.
    handed_back: u64,
    /// Terms won by a leader standing on a log handed back to it.
    handed_back_wins: u64,
    /// Follower logs handed to an owner other than their leader.
    handed_to_owner: u64,
    /// Terms won by an owner standing on a log a follower handed it.
    owner_wins: u64,
    /// First terms won (by election, in the runs that start before it).
    first_terms: u64,
    /// Channels retired at every voter, then at their leader.
    retired: u64,
    /// Terms won after a retirement (the channel's next incarnation).
    wins_after_retiring: u64,
    /// Promises of candidacies that got no further, forgotten by their
    /// voters (session 20).
    abandoned: u64,
}

/// The god's-eye view the invariants are checked against.
#[derive(Default)]
struct Checker {
    /// Every committed offset and its payload, whoever committed it.
    committed: BTreeMap<u64, u64>,
    winners: BTreeMap<Term, usize>,
    committers: BTreeMap<Term, usize>,
    promises: BTreeMap<(usize, Term), usize>,
    max_promised: Vec<Term>,
    trace: VecDeque<(Duration, Event)>,
}

type Checked = Result<(), (u8, String)>;

impl Checker {
    fn note(&mut self, at: Duration, event: Event) {
        if self.trace.len() == TRACE {
            self.trace.pop_front();
        }
        self.trace.push_back((at, event));
    }

    /// Invariant 2: a broker that may stand, or that just won, holds every
    /// committed entry.
    fn holds_all_committed(&self, who: &str, log: &ReplicaLog<u64>) -> Checked {
        for (&offset, &payload) in &self.committed {
            if log.get(offset) != Some(&payload) {
                return Err((
                    2,
                    format!(
                        "{who} may lead but holds {:?} at committed offset {offset} (committed {payload})",
                        log.get(offset)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn won(&mut self, term: Term, leader: usize, log: &ReplicaLog<u64>) -> Checked {
        let first = *self.winners.entry(term).or_insert(leader);
        if first != leader {
            return Err((1, format!("b{first} and b{leader} both won term {term}")));
        }
        self.holds_all_committed(&format!("b{leader} (won {term})"), log)
    }

    fn commit(&mut self, term: Term, leader: usize, offset: u64, payload: u64) -> Checked {
        let first = *self.committers.entry(term).or_insert(leader);
        if first != leader {
            return Err((
                1,
                format!("b{first} and b{leader} both commit in term {term}"),
            ));
        }
        let before = *self.committed.entry(offset).or_insert(payload);
        if before != payload {
            return Err((
                1,
                format!("offset {offset} committed as {before}, then as {payload} in term {term}"),
            ));
        }
        Ok(())
    }

    fn promise(&mut self, voter: usize, term: Term, candidate: usize, check: bool) -> Checked {
        let first = *self.promises.entry((voter, term)).or_insert(candidate);
        if check && first != candidate {
            return Err((
                3,
                format!("b{voter} prepared b{first} and b{candidate} for term {term}"),
            ));
        }
        Ok(())
    }

    fn promised_now(&mut self, voter: usize, promised: Term) -> Checked {
        let max = &mut self.max_promised[voter];
        if promised < *max {
            return Err((3, format!("b{voter} promised {max}, now {promised}")));
        }
        *max = promised;
        Ok(())
    }

    /// Invariant 5: a leader serving a read is still the newest: no later
    /// term was won.
    fn read(&mut self, term: Term, leader: usize) -> Checked {
        match self.winners.range(term.next()..).next() {
            Some((later, by)) => Err((
                5,
                format!("b{leader} served a read in term {term} after b{by} won {later}"),
            )),
            None => Ok(()),
        }
    }
}

struct Model {
    seed: u64,
    rng: StdRng,
    origin: Instant,
    now: Instant,
    brokers: Vec<Broker>,
    net: BinaryHeap<Reverse<Queued>>,
    /// Per (leader, follower): when unacknowledged appends were last sent
    /// again.
    /// and how far that follower had got then.
    resent_at: BTreeMap<(usize, usize), (Instant, u64)>,
    /// Per (from, to): when the last in-order message is handed over.
    last_at: Vec<Instant>,
    failover: Vec<BrokerName>,
    replicas: usize,
    next_payload: u64,
    checker: Checker,
    faults: Faults,
    stats: Stats,
    /// The term of the last retirement: what was committed up to it is
    /// gone by design (its history had expired).
    retired: Option<Term>,
    /// The last epoch made (0: the first term's, when the run starts in it).
    epochs: u64,
}

impl Model {
    fn new(seed: u64, faults: Faults) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(3..=5);
        let replicas = *[1, 2, 2, 2, 3, 3].get(rng.random_range(0..6)).unwrap();
        let origin = Instant::now();
        let mut failover: Vec<BrokerName> = (0..n).map(|i| format!("b{i}").into()).collect();
        failover.shuffle(&mut rng);
        // Half the runs start before the first term: any broker may stand
        // on the configuration term 0 names, each counting out the
        // brokers it believes down (brokers whose rings differ).
        let fresh = rng.random_bool(0.5);
        let config = ReplicaConfig {
            term: Term(1),
            leader: failover[0].clone(),
            followers: failover[1..replicas].to_vec(),
            witness: (replicas == 2).then(|| failover[2].clone()),
            holders: vec![],
        };
        let brokers: Vec<Broker> = (0..n)
            .map(|i| {
                let name: BrokerName = format!("b{i}").into();
                let mut register = Register::new(LEASE);
                let mut log = ReplicaLog::new();
                let mut leadership = None;
                if !fresh && config.members().any(|m| *m == name) {
                    assert!(register.on_commit(&config));
                }
                if fresh {
                } else if config.leader == name {
                    log.lead(Term(1));
                    leadership = Some(Leadership::new(config.clone(), 0, 0, LEASE));
                } else if config.is_data_replica(&name) {
                    log.adopt(Term(1), 0);
                }
                let epoch = (!fresh && config.is_data_replica(&name)).then_some(0);
                Broker {
                    name,
                    up: true,
                    frozen_until: None,
                    register,
                    log,
                    leadership,
                    candidacy: None,
                    handed_back: false,
                    handed_as_owner: false,
                    floor: Term::ZERO,
                    epoch,
                    untold: None,
                }
            })
            .collect();
        let mut checker = Checker {
            max_promised: vec![Term::ZERO; n],
            ..Checker::default()
        };
        let mut brokers: Vec<Broker> = brokers;
        if !fresh {
            checker.winners.insert(Term(1), index(&config.leader));
            for b in &mut brokers {
                b.register.grant_lease(origin, &config.leader, Term(1));
            }
        }
        Self {
            seed,
            rng,
            origin,
            now: origin,
            brokers,
            net: BinaryHeap::new(),
            resent_at: BTreeMap::new(),
            last_at: vec![origin; MAX_BROKERS * MAX_BROKERS],
            failover,
            replicas,
            next_payload: 1,
            checker,
            faults,
            stats: Stats::default(),
            retired: None,
            epochs: 0,
        }
    }

    fn violation(&self, (invariant, detail): (u8, String)) -> Violation {
        Violation {
            seed: self.seed,
            invariant,
            detail,
            trace: self
                .checker
                .trace
                .iter()
                .map(|(at, event)| {
                    let ms = at.as_millis();
                    match event {
                        Event::Delivered(e) => {
                            format!("{ms:>6}ms b{} -> b{}: {:?}", e.from, e.to, e.msg)
                        }
                        Event::Dropped(e) => {
                            format!("{ms:>6}ms dropped b{} -> b{}: {:?}", e.from, e.to, e.msg)
                        }
                        Event::Note(note) => format!("{ms:>6}ms {note}"),
                    }
                })
                .collect(),
        }
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        let at = self.now - self.origin;
        self.checker.note(at, Event::Note(what()));
    }

    fn active(&self, i: usize) -> bool {
        let b = &self.brokers[i];
        b.up && b.frozen_until.is_none_or(|until| until <= self.now)
    }

    fn delay(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(1..20))
    }

    /// One stream per broker pair keeps order, except for a few messages
    /// (a reconnect, another stream) that overtake others or fall far
    /// behind.
    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let at = if self.rng.random_bool(0.97) {
            let last = self.last_at[from * MAX_BROKERS + to];
            let at = (self.now + self.delay()).max(last);
            self.last_at[from * MAX_BROKERS + to] = at;
            at
        } else {
            self.now + Duration::from_millis(self.rng.random_range(1..300))
        };
        self.enqueue(Envelope { at, from, to, msg });
    }

    fn enqueue(&mut self, envelope: Envelope) {
        let tie = self.rng.random();
        let at = envelope.at;
        self.net.push(Reverse(Queued { at, tie, envelope }));
    }

    fn run(mut self, steps: usize) -> Result<Stats, Violation> {
        for _ in 0..steps {
            self.now += Duration::from_millis(self.rng.random_range(0..=8));
            if let Err(e) = self.deliver_due().and_then(|()| self.step()) {
                return Err(self.violation(e));
            }
        }
        Ok(self.stats)
    }

    fn pick(&mut self, filter: impl Fn(&Self, usize) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.brokers.len())
            .filter(|&i| filter(self, i))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    fn step(&mut self) -> Checked {
        let leads = |m: &Self, i: usize| m.active(i) && m.brokers[i].leadership.is_some();
        match self.rng.random_range(0..1000) {
            0..300 => {
                if let Some(i) = self.pick(leads) {
                    self.publish(i)?;
                }
            }
            300..450 => {
                if let Some(i) = self.pick(leads) {
                    self.heartbeat(i);
                }
            }
            450..520 => {
                if let Some(i) = self.pick(leads) {
                    self.read(i)?;
                }
            }
            520..600 => {
                if let Some(i) = self.pick(Self::active) {
                    self.stand(i)?;
                }
            }
            600..602 => {
                if let Some(i) = self.pick(Self::may_crash) {
                    self.crash(i);
                }
            }
            602..620 => {
                if let Some(i) = self.pick(|m, i| !m.brokers[i].up) {
                    self.restart(i);
                }
            }
            623..625 => {
                if let Some(i) = self.pick(leads) {
                    self.hand_over(i);
                }
            }
            625..700 => {
                if let Some(i) = self.pick(Self::may_hand_back) {
                    let to = index(
                        &self.brokers[i]
                            .register
                            .config()
                            .expect("a follower")
                            .leader,
                    );
                    self.hand_back(i, to)?;
                }
            }
            700..715 => self.hand_to_owner()?,
            850..852 => {
                if let Some(i) = self.pick(Self::may_retire) {
                    self.retire(i);
                }
            }
            870..900 => {
                if let Some(i) = self.pick(Self::may_abandon) {
                    self.abandon(i);
                }
            }
            855..870 => {
                if let Some(i) = self.pick(|m, i| m.active(i) && m.brokers[i].untold.is_some()) {
                    self.tell(i);
                }
            }
            715..850 if self.faults.owner_without_promise => self.hand_to_owner()?,
            620..623 => {
                if let Some(i) = self.pick(Self::active) {
                    let pause = Duration::from_millis(self.rng.random_range(300..3000));
                    self.brokers[i].frozen_until = Some(self.now + pause);
                    self.note(|| format!("b{i} frozen for {pause:?}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Hands over every message that is due, in random order; drops and
    /// duplicates a few.
    fn deliver_due(&mut self) -> Checked {
        while self.net.peek().is_some_and(|q| q.0.at <= self.now) {
            let Some(Reverse(Queued { mut envelope, .. })) = self.net.pop() else {
                break;
            };
            let to = &self.brokers[envelope.to];
            if !to.up {
                // A broker that is down has no connections: what was sent to
                // it is gone.
                continue;
            }
            if let Some(thaw) = to.frozen_until.filter(|&t| t > self.now) {
                // Queued until it thaws.
                envelope.at = thaw;
                self.enqueue(envelope);
                continue;
            }
            self.deliver(envelope)?;
        }
        Ok(())
    }

    fn deliver(&mut self, envelope: Envelope) -> Checked {
        let at = self.now - self.origin;
        match self.rng.random_range(0..100) {
            0..3 => {
                self.checker.note(at, Event::Dropped(envelope));
                return Ok(());
            }
            3..6 => {
                let mut copy = envelope.clone();
                copy.at = self.now + self.delay();
                self.enqueue(copy);
            }
            _ => {}
        }
        self.checker.note(at, Event::Delivered(envelope.clone()));
        let to = envelope.to;
        self.handle(envelope)?;
        // The register is the arbiter: a leader whose register promised a
        // newer term steps down at once.
        let b = &mut self.brokers[to];
        if b.leadership
            .as_ref()
            .is_some_and(|l| b.register.promised() != l.term())
        {
            b.leadership = None;
        }
        let promised = self.brokers[to].register.promised();
        self.checker.promised_now(to, promised)
    }

    fn handle(&mut self, Envelope { from, to, msg, .. }: Envelope) -> Checked {
        let from_name = self.brokers[from].name.clone();
        match msg {
            Msg::Prepare { term } => {
                let reply = self.on_prepare(to, &from_name, term);
                if matches!(reply, PrepareReply::Promised { .. }) {
                    let check = !self.faults.skip_vote_check;
                    self.checker.promise(to, term, from, check)?;
                }
                self.send(to, from, Msg::PrepareReply { term, reply });
            }
            Msg::PrepareReply { term, reply } => {
                if let Some(outcome) =
                    self.candidacy_at(to, term, |c| c.on_prepare_reply(&from_name, &reply))
                {
                    self.on_outcome(to, outcome)?;
                }
            }
            Msg::Commit { config } => {
                let register = &mut self.brokers[to].register;
                let accepted = register.on_commit(&config);
                let promised = register.promised();
                let term = config.term;
                self.send(
                    to,
                    from,
                    Msg::CommitReply {
                        term,
                        accepted,
                        promised,
                    },
                );
            }
            Msg::CommitReply {
                term,
                accepted,
                promised,
            } => {
                if let Some(outcome) = self.candidacy_at(to, term, |c| {
                    c.on_commit_reply(&from_name, accepted, promised)
                }) {
                    self.on_outcome(to, outcome)?;
                }
            }
            Msg::Adopt {
                config,
                leader_end,
                epoch,
            } => {
                let b = &mut self.brokers[to];
                if b.register.on_commit(&config) && config.followers.contains(&b.name) {
                    // As `Replicas::adopt`: a log of another epoch is of an
                    // incarnation that ended; its offsets mean nothing here.
                    if b.epoch.is_some_and(|e| e != epoch) && !self.faults.keep_ended_epochs {
                        b.log.start_over();
                    }
                    b.log.adopt(config.term, leader_end);
                    b.epoch = Some(epoch);
                }
            }
            Msg::Append {
                term,
                offset,
                payload,
                committed,
            } => {
                let b = &mut self.brokers[to];
                let reply = b
                    .log
                    .on_append(&b.register, term, offset, payload, committed);
                self.send(to, from, Msg::AppendReply { term, reply });
            }
            Msg::AppendReply { term, reply } => self.on_append_reply(to, from, term, reply)?,
            Msg::Heartbeat { term, sent_at } => {
                let granted = self.brokers[to]
                    .register
                    .grant_lease(self.now, &from_name, term)
                    .is_some();
                self.send(
                    to,
                    from,
                    Msg::HeartbeatReply {
                        term,
                        sent_at,
                        granted,
                    },
                );
            }
            Msg::Retire { term, end } => {
                let b = &mut self.brokers[to];
                let from_its_leader = b
                    .register
                    .config()
                    .is_none_or(|c| c.term < term || c.leader == from_name);
                // As `Replicas::retire`: a leader of an earlier term is out
                // of date; only a log of the retiring term can hold more.
                let leads_now = b.leadership.as_ref().is_some_and(|l| l.term() >= term);
                let holds_more = b.log.term() >= term && b.log.end() > end;
                let standing = b.candidacy.is_some();
                let settled = b.register.settled_at(term);
                let forgotten =
                    !leads_now && !holds_more && !standing && settled && from_its_leader;
                if !forgotten {
                    self.note(|| {
                        format!(
                            "b{to} keeps the channel: leads {leads_now}, holds more \
                             {holds_more}, standing {standing}, settled {settled}, \
                             from its leader {from_its_leader}"
                        )
                    });
                }
                let b = &mut self.brokers[to];
                if forgotten {
                    b.forget(term);
                    let floor = self.brokers[to].floor;
                    self.note(|| {
                        format!("b{to} forgot the channel (retired in {term}), floor {floor}")
                    });
                }
                // Kept because a later configuration was made: the channel
                // went on, and its leader retires it. A bare later promise
                // is not enough (a voter that forgot keeps the floor).
                let later = (self.brokers[to].register.config()).is_some_and(|c| c.term > term);
                let reply = Msg::RetireReply {
                    term,
                    end,
                    forgotten: forgotten || later,
                };
                self.send(to, from, reply);
            }
            Msg::RetireReply {
                term,
                end,
                forgotten,
            } => {
                let b = &mut self.brokers[to];
                if let Some((t, e, left)) = &mut b.untold
                    && (*t, *e) == (term, end)
                    && forgotten
                {
                    left.remove(&from);
                    if left.is_empty() {
                        b.untold = None;
                        let same = b.leadership.as_ref().is_some_and(|l| l.term() == term);
                        if self.faults.retire_voters_first && same && b.log.end() == end {
                            b.forget(term);
                            self.checker.committed.clear();
                            self.retired = Some(term);
                            self.stats.retired += 1;
                        }
                    }
                }
            }
            Msg::Handed {
                config,
                first,
                entries,
                back,
                owner,
                epoch,
            } => {
                // As a broker does when it adopts a channel handed to it:
                // never over a log of a later term, nor while leading.
                let b = &mut self.brokers[to];
                if b.leadership.is_none() && config.term >= b.log.term() {
                    b.register.learn(&config);
                    b.log = match back {
                        Some(committed) => {
                            ReplicaLog::handed_back(config.term, first, entries, committed)
                        }
                        None => ReplicaLog::handed(config.term, first, entries),
                    };
                    b.epoch = epoch;
                    b.handed_back = back.is_some();
                    b.handed_as_owner = owner;
                }
            }
            Msg::HeartbeatReply {
                term,
                sent_at,
                granted,
            } => {
                if let Some(l) = self.brokers[to].leadership.as_mut()
                    && l.term() == term
                    && granted
                {
                    l.on_lease_granted(&from_name, sent_at);
                }
            }
        }
        Ok(())
    }

    fn on_prepare(&mut self, to: usize, candidate: &BrokerName, term: Term) -> PrepareReply {
        let now = self.now;
        let b = &mut self.brokers[to];
        let log_end = b
            .register
            .config()
            .is_some_and(|c| c.is_data_replica(&b.name))
            .then(|| b.log.end());
        let reply = b.register.on_prepare(now, candidate, term, log_end);
        let same_term_other = matches!(
            reply,
            PrepareReply::Refused { promised, reason: Refusal::Older, .. } if promised == term
        );
        if self.faults.vote_twice && same_term_other {
            // The injected bug: forget the first promise of this term.
            let mut forgetful = Register::new(LEASE);
            let again = forgetful.on_prepare(now, candidate, term, log_end);
            b.register = forgetful;
            return again;
        }
        reply
    }

    fn candidacy_at(
        &mut self,
        at: usize,
        term: Term,
        f: impl FnOnce(&mut Candidacy) -> Outcome,
    ) -> Option<Outcome> {
        match self.brokers[at].candidacy.as_mut() {
            Some((c, _)) if c.term() == term => Some(f(c)),
            _ => None,
        }
    }

    fn on_outcome(&mut self, at: usize, outcome: Outcome) -> Checked {
        match outcome {
            Outcome::Pending => Ok(()),
            Outcome::Propose(config) => {
                let b = &mut self.brokers[at];
                // As `election::stand`: remembered, to stand on if it never
                // leads it.
                if let Some((c, _)) = &b.candidacy {
                    let voters = if self.faults.unled_on_own_voters {
                        config.voters()
                    } else {
                        c.base().voters()
                    };
                    b.log.proposed(config.term, voters);
                }
                let voters = b.candidacy.as_ref().map(|(c, _)| c.voters().to_vec());
                for v in voters.unwrap_or_default() {
                    self.send(
                        at,
                        index(&v),
                        Msg::Commit {
                            config: config.clone(),
                        },
                    );
                }
                Ok(())
            }
            Outcome::Lost { newer_term, config } => {
                self.note(|| format!("b{at} lost to term {newer_term}"));
                let b = &mut self.brokers[at];
                b.candidacy = None;
                // Not one it retired, reported by a broker not told yet.
                let retired_here =
                    |c: &ReplicaConfig| b.untold.as_ref().is_some_and(|u| u.0 >= c.term);
                if let Some(config) = config
                    && !retired_here(&config)
                {
                    b.register.learn(&config);
                }
                Ok(())
            }
            Outcome::Won { config, .. } => self.lead(at, config),
        }
    }

    /// The winner's log is the reference of the new term. It applies the
    /// config to its own register first and leads only if that register
    /// accepts it; if it promised a later term meanwhile, it learns the
    /// config and may stand again on top of it.
    fn lead(&mut self, at: usize, config: ReplicaConfig) -> Checked {
        let b = &mut self.brokers[at];
        b.candidacy = None;
        if b.log.is_lost() {
            // Handed back to its leader while it stood: it learns the
            // config and does not lead (`Replicas::won`).
            b.register.learn(&config);
            self.note(|| format!("b{at} won {} but handed its log back", config.term));
            return Ok(());
        }
        if b.log.is_handed_for(b.log.term()) {
            self.stats.handed_wins += 1;
            if b.handed_back {
                self.stats.handed_back_wins += 1;
            }
            if b.handed_as_owner {
                self.stats.owner_wins += 1;
            }
        }
        b.log.lead(config.term);
        // As a broker does: the epoch of the log it leads, or a new one.
        let epoch = match b.epoch {
            Some(e) => e,
            None => {
                self.epochs += 1;
                self.epochs
            }
        };
        let b = &mut self.brokers[at];
        b.epoch = Some(epoch);
        if !b.register.on_commit(&config) {
            b.register.learn(&config);
            self.note(|| format!("b{at} won {} but promised a later term", config.term));
            return self.checker.won(config.term, at, &self.brokers[at].log);
        }
        let leadership = Leadership::new(config.clone(), b.log.end(), b.log.committed(), LEASE);
        let leader_end = leadership.end();
        b.leadership = Some(leadership);
        self.stats.terms_won += 1;
        if config.term == Term(1) {
            self.stats.first_terms += 1;
        }
        if self.retired.is_some_and(|r| config.term > r) {
            self.stats.wins_after_retiring += 1;
        }
        self.note(|| format!("b{at} leads {config:?} from log end {leader_end}"));
        self.checker.won(config.term, at, &self.brokers[at].log)?;
        for m in config.members().filter(|m| **m != config.leader) {
            let msg = Msg::Adopt {
                config: config.clone(),
                leader_end,
                epoch,
            };
            self.send(at, index(m), msg);
        }
        self.heartbeat(at);
        Ok(())
    }

    fn on_append_reply(
        &mut self,
        at: usize,
        from: usize,
        term: Term,
        reply: AppendReply,
    ) -> Checked {
        let follower = self.brokers[from].name.clone();
        let Some(l) = self.brokers[at]
            .leadership
            .as_mut()
            .filter(|l| l.term() == term)
        else {
            return Ok(());
        };
        match reply {
            AppendReply::Stored { end } => {
                let committed = l.on_ack(&follower, end);
                self.commit(at, committed)?;
            }
            AppendReply::Gap { next } => {
                let range = l.on_gap(&follower, next);
                self.send_range(at, from, range);
            }
            AppendReply::Stale { promised } => {
                self.note(|| format!("b{at} steps down from {term}: b{from} promised {promised}"));
                self.brokers[at].leadership = None;
            }
            AppendReply::NotAdopted => {
                let config = l.config().clone();
                let leader_end = l.end();
                let epoch = self.brokers[at].epoch.expect("a leader's log has an epoch");
                let msg = Msg::Adopt {
                    config,
                    leader_end,
                    epoch,
                };
                self.send(at, from, msg);
            }
        }
        Ok(())
    }

    fn commit(&mut self, at: usize, offsets: std::ops::Range<u64>) -> Checked {
        let b = &mut self.brokers[at];
        let term = b.leadership.as_ref().map_or(Term::ZERO, Leadership::term);
        for offset in offsets {
            let payload = *b.log.get(offset).expect("the leader holds what it commits");
            b.log.mark_committed(offset);
            self.stats.commits += 1;
            // A stale leader of a retired incarnation learning late that
            // an append of its term was stored: that history is gone.
            if self.retired.is_none_or(|r| term > r) {
                self.checker.commit(term, at, offset, payload)?;
            }
        }
        Ok(())
    }

    fn send_range(&mut self, at: usize, to: usize, offsets: std::ops::Range<u64>) {
        let b = &self.brokers[at];
        let Some(l) = b.leadership.as_ref() else {
            return;
        };
        let (term, committed) = (l.term(), l.committed());
        let msgs: Vec<Msg> = offsets
            .filter_map(|offset| {
                let payload = *b.log.get(offset)?;
                Some(Msg::Append {
                    term,
                    offset,
                    payload,
                    committed,
                })
            })
            .collect();
        for msg in msgs {
            self.send(at, to, msg);
        }
    }

    fn publish(&mut self, at: usize) -> Checked {
        let payload = self.next_payload;
        self.next_payload += 1;
        let b = &mut self.brokers[at];
        let Some(l) = b.leadership.as_mut() else {
            return Ok(());
        };
        let (offset, committed) = l.append();
        assert_eq!(
            b.log.push(payload),
            offset,
            "the leader's log and offsets agree"
        );
        let followers = l.config().followers.clone();
        self.commit(at, committed)?;
        for f in followers {
            let range = self.brokers[at]
                .leadership
                .as_mut()
                .map_or(0..0, |l| l.to_send(&f));
            self.send_range(at, index(&f), range);
        }
        Ok(())
    }

    /// Lease renewals to every other voter, and (sometimes) what followers
    /// have not acknowledged, in case it was lost.
    fn heartbeat(&mut self, at: usize) {
        let now = self.now;
        let Some(l) = self.brokers[at].leadership.as_mut() else {
            return;
        };
        let config = l.config().clone();
        let term = config.term;
        let mut ranges = Vec::new();
        for f in &config.followers {
            let to = index(f);
            let acked = l.acked(f).unwrap_or(0);
            let stuck = match self.resent_at.get(&(at, to)) {
                // No progress since the last look, a while ago.
                Some(&(since, before)) => before == acked && now - since >= RESEND_AFTER,
                None => false,
            };
            let moved = self
                .resent_at
                .get(&(at, to))
                .is_none_or(|&(_, before)| before != acked);
            if moved {
                self.resent_at.insert((at, to), (now, acked));
            } else if stuck && acked < l.end() {
                self.resent_at.insert((at, to), (now, acked));
                ranges.push((to, l.unacked(f)));
            }
        }
        // Its own register, a voter too, votes for nobody else meanwhile.
        self.brokers[at]
            .register
            .grant_lease(now, &config.leader, term);
        for v in config.voters().iter().filter(|v| **v != config.leader) {
            self.send(at, index(v), Msg::Heartbeat { term, sent_at: now });
        }
        for (to, range) in ranges {
            self.send_range(at, to, range);
        }
    }

    /// A planned move: the leader steps down and hands what may have been
    /// committed, with its configuration, to another broker
    /// (a data replica of its term or not), which may then stand on it.
    fn hand_over(&mut self, at: usize) {
        let Some(to) = self.pick(|m, i| i != at && m.active(i)) else {
            return;
        };
        let b = &mut self.brokers[at];
        let Some(l) = b.leadership.take() else {
            return;
        };
        let config = l.config().clone();
        let (first, upto) = (b.log.first(), b.log.handover_end());
        self.note(|| {
            format!(
                "b{at} steps down from {} at {upto}, hands over to b{to}",
                config.term
            )
        });
        self.send_log((at, to), config, (first, upto), None);
    }

    /// Sends `from`'s log from `first` to `upto`, with `config`, to `to`:
    /// a hand-over, or a hand-back (`back`: what `from` knew committed).
    fn send_log(
        &mut self,
        (from, to): (usize, usize),
        config: ReplicaConfig,
        (first, upto): (u64, u64),
        back: Option<u64>,
    ) {
        let log = &self.brokers[from].log;
        let entries = (first..=upto)
            .map(|o| *log.get(o).expect("a log holds what it hands"))
            .collect();
        let owner = back.is_some() && index(&config.leader) != to;
        let msg = Msg::Handed {
            config,
            first,
            entries,
            back,
            owner,
            epoch: self.brokers[from].epoch,
        };
        self.send(from, to, msg);
    }

    /// Whether `at` follows a term whose leader restarted without its log
    /// and asks for the channel (as `Replicas::hand_replica` decides).
    fn may_hand_back(&self, at: usize) -> bool {
        let Some(leader) = self.brokers[at].register.config().map(|c| index(&c.leader)) else {
            return false;
        };
        let asks = self.active(leader)
            && self.brokers[leader].leadership.is_none()
            && self.brokers[leader].log.is_lost();
        asks && self.may_hand(at)
    }

    /// A follower that may hands its log to an owner (picked at random).
    fn hand_to_owner(&mut self) -> Checked {
        let Some(i) = self.pick(Self::may_hand_to_owner) else {
            return Ok(());
        };
        let owners = self.owners_for(i);
        let to = owners[self.rng.random_range(0..owners.len())];
        self.hand_back(i, to)
    }

    /// Whether `at` may hand its log to an owner other than its leader
    /// (`Replicas::hand_replica` once the leader is lost to it): one that
    /// leads nothing asks. Broader than the broker's rule, which also
    /// wants the leader's stream ended or silent and that owner to hold no
    /// copy of the channel: here any broker may be the owner, and a
    /// leader that still leads (with its lease here run out) may be
    /// "lost".
    fn may_hand_to_owner(&self, at: usize) -> bool {
        // Not in a candidacy of its own (it promises the owner the term
        // after its term's: `Replicas::hand_replica`).
        let b = &self.brokers[at];
        let promised_its_term = b
            .register
            .config()
            .is_some_and(|c| b.register.promised() == c.term);
        self.may_hand(at) && promised_its_term && !self.owners_for(at).is_empty()
    }

    /// Who may ask `at` for the channel as its owner: active brokers that
    /// lead nothing, neither `at` nor its leader.
    fn owners_for(&self, at: usize) -> Vec<usize> {
        let leader = self.brokers[at].register.config().map(|c| index(&c.leader));
        (0..self.brokers.len())
            .filter(|&i| i != at && Some(i) != leader)
            .filter(|&i| self.active(i) && self.brokers[i].leadership.is_none())
            .collect()
    }

    /// Whether `at` may hand its log over: it is one of its term's
    /// followers, complete for it, promised no later term but to itself
    /// in a candidacy that ended (one still running keeps the log: it may
    /// yet lead that term), leads nothing, and holds no running lease of
    /// the leader's.
    fn may_hand(&self, at: usize) -> bool {
        let b = &self.brokers[at];
        let Some(config) = b.register.config() else {
            return false;
        };
        let own_candidacy =
            b.register.promised() > config.term && b.register.promised_to() == Some(&b.name);
        let renewing = b
            .register
            .lease()
            .is_some_and(|l| l.holder.as_ref() == Some(&config.leader) && l.until > self.now);
        // Only the term's one follower (R = 2): with two, the other may
        // win the next term without this log's uncommitted tail, which the
        // handed log takes as committed (`Replicas::hand_replica`).
        self.active(at)
            && config.followers == [b.name.clone()]
            && (b.register.promised() == config.term || own_candidacy)
            && b.log.is_complete_for(config.term)
            && b.leadership.is_none()
            && b.candidacy.is_none()
            && !renewing
    }

    /// A hand-back: the follower sends its whole log with its term's
    /// configuration to `to` (the term's leader, or an owner), and voids
    /// its own (the recipient may serve the channel without it). To an
    /// owner, it first promises that owner the next term: the leader,
    /// which may be alive after all (frozen, or cut off from this
    /// follower alone), can then neither adopt this follower into its
    /// term again nor commit anything more in it, so the log handed holds
    /// all that term committed (without the promise, a leader that adopted
    /// the follower again committed offsets the handed log lacks, and the
    /// owner won the next term without them).
    fn hand_back(&mut self, at: usize, to: usize) -> Checked {
        let now = self.now;
        let config = self.brokers[at]
            .register
            .config()
            .expect("a follower")
            .clone();
        if index(&config.leader) == to {
            self.stats.handed_back += 1;
        } else if self.faults.owner_without_promise {
            self.stats.handed_to_owner += 1;
        } else {
            let term = self.brokers[at].register.promised().next();
            let owner = self.brokers[to].name.clone();
            let reply = self.brokers[at]
                .register
                .on_prepare(now, &owner, term, None);
            if !matches!(reply, PrepareReply::Promised { .. }) {
                return Ok(());
            }
            self.checker.promise(at, term, to, true)?;
            self.checker.promised_now(at, term)?;
            self.stats.handed_to_owner += 1;
        }
        let b = &self.brokers[at];
        let (first, end, committed) = (b.log.first(), b.log.end(), b.log.committed());
        self.note(|| format!("b{at} hands its log of {} to b{to}", config.term));
        self.send_log((at, to), config, (first, end), Some(committed));
        self.brokers[at].log = ReplicaLog::lost();
        self.brokers[at].epoch = None;
        Ok(())
    }

    fn read(&mut self, at: usize) -> Checked {
        let now = self.now;
        let Some(l) = self.brokers[at].leadership.as_ref() else {
            return Ok(());
        };
        if !l.may_serve_reads(now) {
            return Ok(());
        }
        let term = l.term();
        self.stats.reads += 1;
        self.checker.read(term, at)
    }

    fn stand(&mut self, at: usize) -> Checked {
        let now = self.now;
        if let Some((_, since)) = &self.brokers[at].candidacy
            && now - *since < CANDIDACY_TIMEOUT
        {
            return Ok(());
        }
        let mut down = BTreeSet::new();
        for i in (0..self.brokers.len()).filter(|&i| i != at) {
            let p = if self.active(i) { 0.15 } else { 0.7 };
            if self.rng.random_bool(p) {
                down.insert(self.brokers[i].name.clone());
            }
        }
        let first = if self.faults.live_first_voters {
            vec![]
        } else {
            self.failover.clone()
        };
        let plan = Plan {
            // The ring as this broker sees it: the order less those it
            // believes down.
            failover: self
                .failover
                .iter()
                .filter(|b| !down.contains(*b))
                .cloned()
                .collect(),
            first,
            down,
            replicas: self.replicas,
        };
        let b = &mut self.brokers[at];
        let Some(base) = b.register.config().cloned().or(plan.initial_config()) else {
            return Ok(());
        };
        // Triggers (docs/replication.md): a leader refills when it believes
        // a member down; anyone else once the lease it granted ran out.
        let trigger = match &b.leadership {
            Some(_) => base.members().any(|m| plan.down.contains(m)),
            None => b.register.lease().is_none_or(|l| l.until <= now),
        };
        if !trigger {
            return Ok(());
        }
        let term = b.register.promised().max(base.term).next();
        let base_term = base.term;
        let Ok(candidacy) = Candidacy::new(b.name.clone(), base, &b.log, term, plan) else {
            return Ok(());
        };
        let voters = candidacy.voters().to_vec();
        b.candidacy = Some((candidacy, now));
        self.note(|| format!("b{at} stands for term {term}"));
        // Standing on the newest chosen config, it must hold everything
        // committed; on an older one it will meet the newer and lose.
        if self
            .checker
            .winners
            .range(base_term.next()..)
            .next()
            .is_none()
        {
            let who = format!("b{at} (standing on {base_term})");
            self.checker
                .holds_all_committed(&who, &self.brokers[at].log)?;
        }
        for v in voters {
            self.send(at, index(&v), Msg::Prepare { term });
        }
        Ok(())
    }

    /// A leader with nothing pending and no candidacy may retire the
    /// channel (its history expired: the model has no clock for that).
    fn may_retire(&self, at: usize) -> bool {
        let b = &self.brokers[at];
        self.active(at)
            && b.candidacy.is_none()
            && b.leadership.is_some()
            && b.log.committed() == b.log.end()
    }

    /// The leader decides and forgets first (`Replicas::retire_led`),
    /// then tells every other broker its configuration names.
    fn retire(&mut self, at: usize) {
        let b = &mut self.brokers[at];
        let Some(l) = &b.leadership else { return };
        let (term, end) = (l.term(), b.log.end());
        let others = others_named(l.config(), at);
        if self.faults.retire_voters_first && !others.is_empty() {
            b.untold = Some((term, end, others));
            self.tell(at);
            return;
        }
        b.forget(term);
        b.untold = (!others.is_empty()).then_some((term, end, others));
        self.checker.committed.clear();
        self.retired = Some(term);
        self.stats.retired += 1;
        self.note(|| format!("b{at} retired the channel in {term} at {end}"));
        self.tell(at);
    }

    /// Tells the brokers that have not confirmed `at`'s retirement again.
    fn tell(&mut self, at: usize) {
        let Some((term, end, left)) = self.brokers[at].untold.clone() else {
            return;
        };
        for v in left {
            self.send(at, v, Msg::Retire { term, end });
        }
    }

    /// A broker that promised a term but holds no configuration, no lease,
    /// no log and no leadership, and stands for nothing, may forget the
    /// channel on its own (`Replicas::forget_abandoned`): the candidacy
    /// that asked for the promise got no further. The model lets it do so
    /// at any time; the broker waits a while.
    fn may_abandon(&self, at: usize) -> bool {
        let b = &self.brokers[at];
        self.active(at)
            && b.candidacy.is_none()
            && b.leadership.is_none()
            && b.register.config().is_none()
            && b.register.lease().is_none_or(|l| l.until <= self.now)
            && b.register.promised() > b.floor
            && b.log.holds_nothing()
    }

    fn abandon(&mut self, at: usize) {
        let b = &mut self.brokers[at];
        let promised = b.register.promised();
        if self.faults.abandon_without_floor {
            b.register = Register::above(LEASE, b.floor);
            b.log = ReplicaLog::above(b.floor);
        } else {
            b.forget(Term::ZERO);
        }
        self.stats.abandoned += 1;
        self.note(|| format!("b{at} forgot its abandoned promise of {promised}"));
    }

    /// The model stays within the promise: it never takes down the last
    /// up broker that could stand on the newest chosen config (losing every
    /// copy is the announced epoch change, outside this protocol).
    fn may_crash(&self, at: usize) -> bool {
        let newest = *self
            .checker
            .winners
            .keys()
            .next_back()
            .unwrap_or(&Term::ZERO);
        if self.retired.is_some_and(|r| r >= newest) {
            return self.brokers[at].up;
        }
        self.brokers[at].up
            && self.brokers.iter().enumerate().any(|(i, b)| {
                i != at
                    && b.up
                    && b.register
                        .config()
                        .is_some_and(|c| c.term == newest && c.is_data_replica(&b.name))
                    && b.log.is_complete_for(newest)
            })
    }

    fn crash(&mut self, at: usize) {
        let b = &mut self.brokers[at];
        b.up = false;
        b.frozen_until = None;
        b.leadership = None;
        b.candidacy = None;
        // Durable: the register. Volatile: the log, leadership, candidacy.
        b.log = ReplicaLog::lost();
        b.epoch = None;
        self.net.retain(|q| q.0.envelope.to != at);
        self.stats.crashes += 1;
        self.note(|| format!("b{at} crashed"));
    }

    fn restart(&mut self, at: usize) {
        let now = self.now;
        let b = &mut self.brokers[at];
        b.up = true;
        b.register = b.register.restarted(now);
        self.note(|| format!("b{at} restarted"));
    }
}

/// Every broker `config` names (members and holders) but `at`.
fn others_named(config: &ReplicaConfig, at: usize) -> BTreeSet<usize> {
    config.everyone().map(index).filter(|&v| v != at).collect()
}

fn index(name: &BrokerName) -> usize {
    name.as_str()[1..].parse().expect("brokers are b0..b4")
}

fn run(seed: u64, steps: usize, faults: Faults) -> Result<Stats, Violation> {
    Model::new(seed, faults).run(steps)
}

/// Seeds run by default (CI); `REPLICATION_MODEL_SEEDS=2000` runs more.
fn seeds() -> u64 {
    std::env::var("REPLICATION_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(250)
}

#[test]
fn invariants_hold_over_many_seeds() {
    let seeds = seeds();
    let mut total = Stats::default();
    // To replay one failing seed with a longer trace: REPLICATION_MODEL_FROM=N
    // REPLICATION_MODEL_SEEDS=N+1, and a larger TRACE.
    let from = std::env::var("REPLICATION_MODEL_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in from..seeds {
        match run(seed, 2000, Faults::default()) {
            Ok(s) => {
                total.commits += s.commits;
                total.terms_won += s.terms_won;
                total.reads += s.reads;
                total.crashes += s.crashes;
                total.handed_wins += s.handed_wins;
                total.handed_back += s.handed_back;
                total.handed_back_wins += s.handed_back_wins;
                total.handed_to_owner += s.handed_to_owner;
                total.owner_wins += s.owner_wins;
                total.first_terms += s.first_terms;
                total.retired += s.retired;
                total.wins_after_retiring += s.wins_after_retiring;
                total.abandoned += s.abandoned;
            }
            Err(v) => panic!("{v}"),
        }
    }
    let seeds = seeds - from.min(seeds);
    eprintln!("{seeds} seeds: {total:?}");
    // Not vacuous: the runs commit, change terms and serve reads. (Half
    // of them start before the first term, and commit less.)
    assert!(total.commits > 80 * seeds, "{total:?}");
    assert!(total.first_terms > seeds / 4, "{total:?}");
    assert!(total.terms_won > 2 * seeds, "{total:?}");
    assert!(total.reads > 40 * seeds, "{total:?}");
    assert!(total.handed_wins > seeds / 10, "{total:?}");
    // Fewer than the other paths: a follower standing for the channel
    // keeps its log until its candidacy ended (session 16 halved the
    // hand-backs, 18 to 8 over the 250 seeds, 6 of them won).
    assert!(total.handed_back_wins > seeds / 50, "{total:?}");
    // An owner other than the leader wins on a follower's log (session 17).
    assert!(total.owner_wins > seeds / 50, "{total:?}");
    // Channels are retired, and come back (session 18).
    assert!(total.retired > seeds / 10, "{total:?}");
    assert!(total.wins_after_retiring > seeds / 20, "{total:?}");
    // Voters forget the promises of candidacies that got no further
    // (session 20).
    assert!(total.abandoned > seeds / 10, "{total:?}");
}

/// First candidacies that each stand at the voters of their own view of
/// the ring (as brokers did until session 14) can both win the first
/// term: the checker catches it. `Plan::first`, the order over every
/// broker seen, is what rules it out.
#[test]
fn first_voters_from_each_candidates_own_ring_are_caught() {
    let faults = Faults {
        live_first_voters: true,
        ..Faults::default()
    };
    let caught = first_violation(500, faults, "two first terms");
    assert!(matches!(caught.invariant, 1 | 2), "{caught}");
}

/// The first violation in seeds `0..seeds` with `faults` injected: the
/// checker must catch what they cause.
fn first_violation(seeds: u64, faults: Faults, what: &str) -> Violation {
    let caught = (0..seeds).find_map(|seed| run(seed, 2000, faults).err());
    let caught = caught.unwrap_or_else(|| panic!("the checker must catch {what}"));
    eprintln!("{caught}");
    caught
}

/// A follower that hands its log to an owner other than its leader
/// without first promising it the next term: the leader, alive after all,
/// adopts the follower again and commits what the handed log lacks, and
/// the owner wins the next term without it. The checker catches it.
#[test]
fn an_owner_handed_a_log_without_a_promise_is_caught() {
    let faults = Faults {
        owner_without_promise: true,
        ..Faults::default()
    };
    let caught = first_violation(2000, faults, "a hand-over to an owner without a promise");
    assert_eq!(caught.invariant, 2, "{caught}");
}

/// Retiring with the other brokers forgetting first and the leader last
/// (leading on meanwhile, and keeping the channel if a publication came
/// in) lets a broker that forgot decide a new term without the leader,
/// which still commits in its own: the checker catches it. The leader
/// deciding and forgetting first is what rules it out.
#[test]
fn a_retirement_where_the_others_forget_first_is_caught() {
    let faults = Faults {
        retire_voters_first: true,
        ..Faults::default()
    };
    let v = first_violation(seeds().max(250), faults, "voters forgetting first");
    assert!(matches!(v.invariant, 1 | 2), "{v}");
}

/// Rare: it takes a voter kept by the retirement (standing), then named a
/// follower of the next incarnation before it was told again (seed 7,802
/// since the unled-configuration fix; 2,005 before). Slow (about 2
/// minutes): `cargo test -p switchboard-cluster --test replication_model
/// -- --ignored ended_epoch`.
#[test]
#[ignore]
fn a_follower_keeping_a_log_of_an_ended_epoch_is_caught() {
    let faults = Faults {
        keep_ended_epochs: true,
        ..Faults::default()
    };
    let v = first_violation(seeds().max(8000), faults, "a log of an ended epoch");
    assert_eq!(v.invariant, 2, "{v}");
}

/// Rare: it takes a candidate that counted every other broker out, whose
/// proposal only its own register accepted. Slow (about 10 minutes):
/// `cargo test -p switchboard-cluster --test replication_model -- --ignored unled`.
#[test]
#[ignore]
fn the_named_leader_of_an_unled_configuration_on_its_voters_alone_is_caught() {
    let faults = Faults {
        unled_on_own_voters: true,
        ..Faults::default()
    };
    let v = first_violation(seeds().max(46_000), faults, "an unled configuration");
    assert!(matches!(v.invariant, 1 | 2), "{v}");
}

/// A promise forgotten without the floor that keeps it lets its voter
/// promise the same term twice: the checker catches it.
#[test]
fn an_abandoned_promise_forgotten_without_its_floor_is_caught() {
    let faults = Faults {
        abandon_without_floor: true,
        ..Faults::default()
    };
    let caught = first_violation(
        seeds().max(250),
        faults,
        "abandoned promises without a floor",
    );
    assert_eq!(caught.invariant, 3, "{caught}");
}

#[test]
fn a_seed_replays_the_same_run() {
    let a = run(7, 2000, Faults::default()).unwrap();
    let b = run(7, 2000, Faults::default()).unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn a_voter_that_votes_twice_is_caught() {
    let faults = Faults {
        vote_twice: true,
        ..Faults::default()
    };
    let caught = first_violation(500, faults, "a double vote");
    assert_eq!(caught.invariant, 3, "{caught}");
}

/// Without the direct check, what a double vote causes is caught: two
/// leaders in one term, or a leader missing committed entries. Slow (the
/// first such seed is in the hundreds): `cargo test -- --ignored`.
#[test]
#[ignore]
fn what_a_double_vote_causes_is_caught() {
    let faults = Faults {
        vote_twice: true,
        skip_vote_check: true,
        ..Faults::default()
    };
    let caught = first_violation(2000, faults, "what a double vote causes");
    assert!(matches!(caught.invariant, 1 | 2), "{caught}");
}
