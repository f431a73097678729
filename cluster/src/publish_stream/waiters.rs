//! [`Waiters`]: the calls in flight on one publish stream, by id, each
//! waiting for its answer (sans-IO but for the one-shot channels that
//! carry answers). Answers come in any order; when the stream ends, every
//! call still waiting fails with why it ended, and no call joins after.

use std::collections::BTreeMap;

use tokio::sync::oneshot;
use tonic::Status;

use switchboard_core::Position;

/// A call's outcome: its position, or the status a unary call would have
/// ended with.
pub type Outcome = Result<Position, Status>;

#[derive(Default)]
pub struct Waiters {
    next: u64,
    /// Ordered, so that an ended stream fails its calls in the order they
    /// were made, the same in every run (simulations replay by seed).
    waiting: BTreeMap<u64, oneshot::Sender<Outcome>>,
    /// Why the stream ended, once it has.
    ended: Option<Status>,
}

impl Waiters {
    /// A new call's id and where its outcome will come; why the stream
    /// ended if it has.
    pub fn register(&mut self) -> Result<(u64, oneshot::Receiver<Outcome>), Status> {
        if let Some(why) = &self.ended {
            return Err(why.clone());
        }
        let id = self.next;
        self.next += 1;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(id, tx);
        Ok((id, rx))
    }

    /// Hands call `id` its outcome. An id not waiting (its caller gave up,
    /// or the broker answered twice) is ignored.
    pub fn answer(&mut self, id: u64, outcome: Outcome) {
        if let Some(tx) = self.waiting.remove(&id) {
            // A caller gone meanwhile no longer needs it.
            let _ = tx.send(outcome);
        }
    }

    /// Whether call `id` still waits (a call whose caller gave up before
    /// it was sent need not be sent).
    pub fn is_waiting(&self, id: u64) -> bool {
        self.waiting.contains_key(&id)
    }

    /// Call `id`'s caller gave up.
    pub fn forget(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    /// The stream ended: every call waiting fails with `why`, and so does
    /// every later [`Waiters::register`].
    pub fn end(&mut self, why: Status) {
        for (_, tx) in std::mem::take(&mut self.waiting) {
            let _ = tx.send(Err(why.clone()));
        }
        self.ended = Some(why);
    }

    pub fn has_ended(&self) -> bool {
        self.ended.is_some()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn at(offset: u64) -> Position {
        Position {
            offset,
            epoch: "e".into(),
        }
    }

    #[test]
    fn answers_reach_their_callers_in_any_order() {
        let mut w = Waiters::default();
        let (a, mut ra) = w.register().unwrap();
        let (b, mut rb) = w.register().unwrap();
        assert_ne!(a, b);
        w.answer(b, Ok(at(2)));
        w.answer(a, Err(Status::failed_precondition("not owner")));
        assert_eq!(rb.try_recv().unwrap().unwrap(), at(2));
        assert_eq!(
            ra.try_recv().unwrap().unwrap_err().code(),
            Code::FailedPrecondition
        );
        assert!(w.is_empty());
        // A second answer, or one for a call never made, changes nothing.
        w.answer(a, Ok(at(9)));
        w.answer(77, Ok(at(9)));
        assert!(w.is_empty());
    }

    #[test]
    fn a_forgotten_call_is_not_waiting_and_its_answer_is_dropped() {
        let mut w = Waiters::default();
        let (a, _ra) = w.register().unwrap();
        assert!(w.is_waiting(a));
        w.forget(a);
        assert!(!w.is_waiting(a));
        w.answer(a, Ok(at(1)));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn the_end_fails_every_waiting_call_and_every_later_one() {
        let mut w = Waiters::default();
        let (_, mut ra) = w.register().unwrap();
        let (_, mut rb) = w.register().unwrap();
        w.end(Status::unavailable("connection reset"));
        for rx in [&mut ra, &mut rb] {
            let status = rx.try_recv().unwrap().unwrap_err();
            assert_eq!(status.code(), Code::Unavailable);
            assert_eq!(status.message(), "connection reset");
        }
        assert!(w.has_ended());
        assert_eq!(w.register().unwrap_err().code(), Code::Unavailable);
    }
}
