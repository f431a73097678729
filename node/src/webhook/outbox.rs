//! [`Outbox`]: one webhook endpoint's queue, without IO. Events wait in
//! order; whatever has queued up while a request was out goes in the next
//! one (up to `batch_max`); a failed request is retried, same batch, with
//! a doubling backoff until `retry_for` has passed since its first try,
//! then dropped and counted. The queue is bounded: an event that finds it
//! full is refused, and the caller counts it.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// The first retry's wait; each later one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A batch being sent (or waiting for its retry).
#[derive(Debug)]
struct InFlight<E> {
    events: Vec<E>,
    attempts: u32,
    first_try: Instant,
    /// When the next attempt may start; `None` while one is out.
    retry_at: Option<Instant>,
}

/// What the driver should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a, E> {
    /// Send these events in one request.
    Send(&'a [E]),
    /// Nothing to send before this instant.
    WaitUntil(Instant),
    /// A request is out: wait for its result.
    Busy,
    /// Nothing queued.
    Idle,
}

/// How a batch ended, for the metrics.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Delivered after this many attempts.
    Delivered { events: usize, attempts: u32 },
    /// Will be retried.
    Retrying { at: Instant },
    /// Given up after `retry_for`.
    Dropped { events: usize },
}

#[derive(Debug)]
pub struct Outbox<E> {
    queue: VecDeque<E>,
    capacity: usize,
    batch_max: usize,
    retry_for: Duration,
    in_flight: Option<InFlight<E>>,
}

impl<E> Outbox<E> {
    pub fn new(capacity: usize, batch_max: usize, retry_for: Duration) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            batch_max: batch_max.max(1),
            retry_for,
            in_flight: None,
        }
    }

    /// Queues `event`; gives it back if the queue is full.
    pub fn push(&mut self, event: E) -> Result<(), E> {
        if self.queue.len() >= self.capacity {
            return Err(event);
        }
        self.queue.push_back(event);
        Ok(())
    }

    /// Events waiting, the batch in flight included.
    pub fn len(&self) -> usize {
        self.queue.len() + self.in_flight.as_ref().map_or(0, |f| f.events.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What to do at `now`. `Send` marks the batch as out: report its
    /// result with [`Self::settle`].
    pub fn next(&mut self, now: Instant) -> Next<'_, E> {
        if self.in_flight.is_none() {
            if self.queue.is_empty() {
                return Next::Idle;
            }
            let n = self.queue.len().min(self.batch_max);
            self.in_flight = Some(InFlight {
                events: self.queue.drain(..n).collect(),
                attempts: 0,
                first_try: now,
                retry_at: Some(now),
            });
        }
        let flight = self.in_flight.as_mut().expect("set above");
        match flight.retry_at {
            None => Next::Busy,
            Some(at) if at > now => Next::WaitUntil(at),
            Some(_) => {
                flight.retry_at = None;
                flight.attempts += 1;
                Next::Send(&flight.events)
            }
        }
    }

    /// The request sent by the last `Send` ended at `now`, delivered or not.
    pub fn settle(&mut self, delivered: bool, now: Instant) -> Settled {
        let Some(flight) = self.in_flight.as_mut() else {
            return Settled::Dropped { events: 0 };
        };
        if delivered {
            let flight = self.in_flight.take().expect("checked");
            return Settled::Delivered {
                events: flight.events.len(),
                attempts: flight.attempts,
            };
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << flight.attempts.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        let at = now + backoff;
        if at.duration_since(flight.first_try) > self.retry_for {
            let flight = self.in_flight.take().expect("checked");
            return Settled::Dropped {
                events: flight.events.len(),
            };
        }
        flight.retry_at = Some(at);
        Settled::Retrying { at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> Outbox<u32> {
        Outbox::new(5, 3, Duration::from_secs(10))
    }

    #[test]
    fn what_queued_goes_out_in_order_in_batches() {
        let (mut o, t) = (outbox(), Instant::now());
        for i in 0..5 {
            o.push(i).unwrap();
        }
        assert_eq!(o.push(5), Err(5), "the queue is bounded");
        assert_eq!(o.next(t), Next::Send(&[0, 1, 2]));
        assert_eq!(o.next(t), Next::Busy);
        o.push(5).unwrap();
        assert_eq!(
            o.settle(true, t),
            Settled::Delivered {
                events: 3,
                attempts: 1
            }
        );
        assert_eq!(o.next(t), Next::Send(&[3, 4, 5]));
        o.settle(true, t);
        assert_eq!(o.next(t), Next::Idle);
        assert!(o.is_empty());
    }

    #[test]
    fn a_failed_batch_is_retried_with_a_doubling_backoff_then_dropped() {
        let (mut o, t0) = (outbox(), Instant::now());
        o.push(1).unwrap();
        o.push(2).unwrap();
        assert_eq!(o.next(t0), Next::Send(&[1, 2]));
        let mut now = t0;
        let mut waits = Vec::new();
        loop {
            match o.settle(false, now) {
                Settled::Retrying { at } => {
                    waits.push(at - now);
                    assert_eq!(o.next(now), Next::WaitUntil(at));
                    now = at;
                    assert_eq!(o.next(now), Next::Send(&[1, 2]), "the same batch");
                }
                Settled::Dropped { events } => {
                    assert_eq!(events, 2);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4], "then 8 s would pass retry_for (10 s)");
        assert_eq!(o.next(now), Next::Idle);
    }

    #[test]
    fn events_wait_behind_a_retrying_batch() {
        let (mut o, t) = (outbox(), Instant::now());
        o.push(1).unwrap();
        assert_eq!(o.next(t), Next::Send(&[1]));
        o.push(2).unwrap();
        let Settled::Retrying { at } = o.settle(false, t) else {
            panic!()
        };
        assert_eq!(o.next(at), Next::Send(&[1]));
        o.settle(true, at);
        assert_eq!(o.next(at), Next::Send(&[2]));
    }
}
