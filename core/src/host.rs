//! [`Host`]: what a node reads from the machine it runs on besides the
//! network: the wall clock and randomness. Behind one seam so that a
//! simulation can hand every node simulated time and a seed of its own, and
//! one seed then always gives one history.
//!
//! Monotonic time is not here: node code reads `tokio::time::Instant`,
//! which is the machine's clock in production and the simulated one under
//! turmoil.

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rand::{SeedableRng, rngs::StdRng};

/// Time since the Unix epoch, as this host's wall clock tells it.
pub type WallClock = fn() -> Duration;

#[derive(Clone, Copy)]
pub struct Host {
    wall: WallClock,
    seed: u64,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed keys hash maps that clients choose the keys of: keep it
        // out of logs.
        f.write_str("Host")
    }
}

impl Default for Host {
    fn default() -> Self {
        Self::system()
    }
}

fn system_wall() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Host {
    /// The real machine: its wall clock and a random seed.
    pub fn system() -> Self {
        Self {
            wall: system_wall,
            seed: rand::random(),
        }
    }

    /// A simulated host: `wall` gives simulated time, `seed` everything
    /// random.
    pub fn simulated(seed: u64, wall: WallClock) -> Self {
        Self { wall, seed }
    }

    /// Microseconds since the Unix epoch.
    pub fn wall_micros(&self) -> u64 {
        (self.wall)().as_micros() as u64
    }

    /// A random number generator for one `purpose`, drawn from this host's
    /// seed (different purposes draw independently).
    pub fn rng(&self, purpose: &str) -> StdRng {
        StdRng::seed_from_u64(self.derive(purpose))
    }

    /// A hasher for maps whose iteration order shows in behaviour: seeded,
    /// so that it is unpredictable in production and repeatable in a
    /// simulation.
    pub fn hasher(&self, purpose: &str) -> foldhash::fast::FixedState {
        foldhash::fast::FixedState::with_seed(self.derive(purpose))
    }

    fn derive(&self, purpose: &str) -> u64 {
        let mut h = foldhash::fast::FixedState::with_seed(self.seed).build_hasher();
        h.write(purpose.as_bytes());
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn one_seed_one_sequence_per_purpose() {
        fn wall() -> Duration {
            Duration::from_secs(1_700_000_000)
        }
        let a = Host::simulated(7, wall);
        let b = Host::simulated(7, wall);
        let draw = |h: &Host, p: &str| h.rng(p).random::<u64>();
        assert_eq!(draw(&a, "epochs"), draw(&b, "epochs"));
        assert_ne!(draw(&a, "epochs"), draw(&a, "jitter"));
        assert_ne!(
            draw(&a, "epochs"),
            draw(&Host::simulated(8, wall), "epochs")
        );
        assert_eq!(a.wall_micros(), 1_700_000_000_000_000);
    }
}
