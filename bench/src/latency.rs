//! End-to-end latency: from the moment a publisher wrote a publication to
//! the moment a subscriber parsed it, in microseconds, in HDR histograms.
//!
//! Every delivery records one value, from many connection tasks at once;
//! they record into one of a few shards by connection so that worker
//! threads rarely meet on a lock, and the shards are merged to report.
//! Few, because merging walks every bucket of every shard (16k each) and
//! the progress line merges once a second on a runtime thread that must
//! not stall: a stall would show up as latency.

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

const SHARDS: usize = 4;

/// Largest latency tracked exactly: a minute. Larger values are clamped.
const HIGHEST_MICROS: u64 = 60_000_000;

pub struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

fn histogram() -> Histogram<u64> {
    // Three significant digits: 0.1% resolution at any magnitude.
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("static bounds are valid")
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
        }
    }
}

impl Latency {
    /// Records one delivery's latency on behalf of connection `conn`.
    pub fn record(&self, conn: usize, micros: u64) {
        self.shards[conn % SHARDS]
            .lock()
            .saturating_record(micros.clamp(1, HIGHEST_MICROS));
    }

    pub fn percentiles(&self) -> Percentiles {
        let mut all = histogram();
        for shard in &self.shards {
            all.add(&*shard.lock())
                .expect("shards share the bounds of `all`");
        }
        if all.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: all.len(),
            p50: all.value_at_quantile(0.5),
            p90: all.value_at_quantile(0.9),
            p99: all.value_at_quantile(0.99),
            p99_9: all.value_at_quantile(0.999),
            max: all.max(),
            mean: (all.mean() * 10.0).round() / 10.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_shards_into_percentiles() {
        let l = Latency::default();
        for i in 1..=1000u64 {
            l.record(i as usize, i);
        }
        let p = l.percentiles();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500);
        assert_eq!(p.p99, 990);
        assert_eq!(p.max, 1000);
        assert_eq!(Latency::default().percentiles(), Percentiles::default());
    }
}
