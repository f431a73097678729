//! Reconnect delays: exponential growth, capped, with full jitter (a
//! uniformly random delay between zero and the current ceiling). Jitter is
//! what keeps thousands of clients cut off by the same event from coming
//! back in step and knocking the server over again.

use std::time::Duration;

/// How delays grow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// Ceiling of the first retry delay.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// Growth of the ceiling per failed attempt.
    pub factor: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(20),
            factor: 2.0,
        }
    }
}

/// Failed attempts since the last stable connection, and the next delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    /// Jitter source in `[0, 1)`; replaceable so tests can pin it.
    random: fn() -> f64,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self::with_random(config, rand::random::<f64>)
    }

    pub fn with_random(config: BackoffConfig, random: fn() -> f64) -> Self {
        Self {
            config,
            attempt: 0,
            random,
        }
    }

    /// Failed attempts counted so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        // Capping the exponent keeps the power finite after many attempts.
        let grown = self.config.initial.as_secs_f64()
            * self.config.factor.powi(self.attempt.min(64) as i32);
        Duration::from_secs_f64(grown.min(self.config.max.as_secs_f64()))
    }

    /// The delay before the next attempt; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.ceiling().mul_f64((self.random)().clamp(0.0, 1.0));
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Called once a connection proved stable.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(initial_ms: u64, max_ms: u64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            factor: 2.0,
        }
    }

    #[test]
    fn ceiling_grows_to_the_cap_and_resets() {
        let mut b = Backoff::with_random(config(100, 1000), || 1.0);
        let delays: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.attempt(), 7);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        assert_eq!(
            Backoff::with_random(config(100, 100), || 0.0).next_delay(),
            Duration::ZERO
        );
        let mut b = Backoff::new(config(100, 100));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_millis(100));
        }
    }

    #[test]
    fn a_thousand_clients_do_not_come_back_in_step() {
        // Third retry of each: ceiling 2 s, twenty 100 ms slots.
        let mut slots = [0u32; 20];
        for _ in 0..1000 {
            let mut b = Backoff::new(config(500, 20_000));
            b.next_delay();
            b.next_delay();
            let ms = b.next_delay().as_millis() as usize;
            slots[(ms / 100).min(19)] += 1;
        }
        assert!(slots.iter().all(|&n| n > 0), "{slots:?}");
        assert!(slots.iter().all(|&n| n < 120), "{slots:?}");
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::with_random(config(500, 20_000), || 0.5);
        for _ in 0..10_000 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(10));
    }
}
