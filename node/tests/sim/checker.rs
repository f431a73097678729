//! The promise a subscribing gateway is held to, per channel:
//!
//! - Within an epoch, publications arrive with offsets increasing by
//!   exactly one: no gap, no reordering, no duplicate.
//! - The epoch (or the offset) may jump only right after a `Reset`
//!   delivery, which is how the gateway tells its clients that continuity
//!   was lost. Any other jump is a *silent* gap.
//! - Every acknowledged publication (the position its publish returned)
//!   arrives, unless a `Reset` ended its epoch (the owner crashed or was
//!   cut off, and its state was lost with it).
//!
//!
//! Counted, not failed: a `Reset` back to an epoch an earlier `Reset` had
//! ended (announced, so not a silent gap), which re-delivers that epoch's
//! retained publications. While a partition heals, a gateway may briefly
//! follow the cut-off owner's copy before the newer copy replaces it;
//! `stale_final` counts channels where the old copy won in the end.
//!
//! [`Strictness::Strict`] adds: no `Reset` at all, one epoch throughout.
//! Planned membership changes (a join, a drain) must keep continuity.

use std::collections::{BTreeMap, BTreeSet};

/// One delivery as the subscribing gateway's sink saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Publication { offset: u64, epoch: String },
    Reset { offset: u64, epoch: String },
}

/// Where a channel's subscription began (its first subscribe reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Start {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// Join or drain: continuity must hold, nothing acknowledged is lost.
    Strict,
    /// Crash or partition: continuity may be lost, but only announced.
    Announced,
}

/// What one channel's history looked like, for the report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ChannelReport {
    pub delivered: usize,
    pub resets: usize,
    pub acked: usize,
    /// Acknowledged, not delivered, in an epoch a reset ended.
    pub excused: usize,
    /// Resets back to an epoch that had ended (announced).
    pub resurrected: usize,
    /// Channels that lost continuity and ended in the epoch they started
    /// in: a stale copy won over the one served meanwhile.
    pub stale_final: usize,
    /// Publications delivered a second time, after such a reset.
    pub redelivered: usize,
}

/// Checks one channel; returns what went wrong, if anything.
pub(crate) fn check_channel(
    channel: &str,
    start: &Start,
    seen: &[Seen],
    acked: &[(u64, String)],
    strictness: Strictness,
) -> Result<ChannelReport, Vec<String>> {
    let mut errors = Vec::new();
    let mut report = ChannelReport {
        acked: acked.len(),
        ..Default::default()
    };
    let (mut epoch, mut offset) = (start.epoch.clone(), start.offset);
    let mut delivered: BTreeSet<(String, u64)> = BTreeSet::new();
    // Epochs a reset moved away from: what was acknowledged in them after
    // the last delivery may be gone, and clients were told.
    let mut ended: BTreeSet<String> = BTreeSet::new();
    for (i, s) in seen.iter().enumerate() {
        match s {
            Seen::Publication {
                offset: o,
                epoch: e,
            } => {
                let again = delivered.contains(&(e.clone(), *o));
                if *e != epoch {
                    errors.push(format!(
                        "{channel}: #{i} offset {o} in epoch {e} while in epoch {epoch} (epoch changed without a reset)"
                    ));
                } else if *o != offset + 1 {
                    let what = if *o <= offset {
                        "duplicate or reordered"
                    } else {
                        "silent gap"
                    };
                    errors.push(format!(
                        "{channel}: #{i} offset {o} after {offset} in epoch {e}: {what}"
                    ));
                }
                if again && report.resurrected > 0 {
                    report.redelivered += 1;
                } else if again {
                    errors.push(format!("{channel}: ({e}, {o}) delivered twice"));
                }
                delivered.insert((e.clone(), *o));
                epoch = e.clone();
                offset = *o;
                report.delivered += 1;
            }
            Seen::Reset {
                offset: o,
                epoch: e,
            } => {
                report.resets += 1;
                if strictness == Strictness::Strict {
                    errors.push(format!(
                        "{channel}: #{i} reset to ({e}, {o}) from ({epoch}, {offset}) where continuity was promised"
                    ));
                }
                ended.insert(epoch.clone());
                if ended.contains(e) {
                    report.resurrected += 1;
                }
                epoch = e.clone();
                offset = *o;
            }
        }
    }
    if report.resets > 0 && epoch == start.epoch {
        report.stale_final = 1;
    }
    for (o, e) in acked {
        if delivered.contains(&(e.clone(), *o)) {
            continue;
        }
        if strictness == Strictness::Announced && ended.contains(e) {
            report.excused += 1;
            continue;
        }
        errors.push(format!(
            "{channel}: acknowledged ({e}, {o}) never delivered (epoch reset: {})",
            ended.contains(e)
        ));
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}

/// A channel's deliveries in runs, for failure messages:
/// `start A@3 | A:4..9 | reset B@0 | B:1..5`.
pub(crate) fn describe(start: &Start, seen: &[Seen]) -> String {
    let mut out = format!("start {}@{}", start.epoch, start.offset);
    let mut run: Option<(String, u64, u64)> = None;
    let flush = |run: &mut Option<(String, u64, u64)>, out: &mut String| {
        if let Some((e, a, b)) = run.take() {
            out.push_str(&format!(" | {e}:{a}..{b}"));
        }
    };
    for s in seen {
        match s {
            Seen::Publication { offset, epoch } => match &mut run {
                Some((e, _, b)) if e == epoch && *b + 1 == *offset => *b = *offset,
                _ => {
                    flush(&mut run, &mut out);
                    run = Some((epoch.clone(), *offset, *offset));
                }
            },
            Seen::Reset { offset, epoch } => {
                flush(&mut run, &mut out);
                out.push_str(&format!(" | reset {epoch}@{offset}"));
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Checks every channel; panics with every violation found.
pub(crate) fn check_all(
    starts: &BTreeMap<String, Start>,
    seen: &BTreeMap<String, Vec<Seen>>,
    acked: &BTreeMap<String, Vec<(u64, String)>>,
    strictness: Strictness,
) -> ChannelReport {
    let mut total = ChannelReport::default();
    let mut errors = Vec::new();
    for (channel, start) in starts {
        let seen = seen.get(channel).map(Vec::as_slice).unwrap_or_default();
        let acked = acked.get(channel).map(Vec::as_slice).unwrap_or_default();
        match check_channel(channel, start, seen, acked, strictness) {
            Ok(r) => {
                total.delivered += r.delivered;
                total.resets += r.resets;
                total.acked += r.acked;
                total.excused += r.excused;
                total.resurrected += r.resurrected;
                total.stale_final += r.stale_final;
                total.redelivered += r.redelivered;
            }
            Err(e) => {
                errors.push(format!("{channel}: {}", describe(start, seen)));
                errors.extend(e);
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} violation(s):\n{}",
        errors.len(),
        errors[..errors.len().min(30)].join("\n")
    );
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offset: u64, epoch: &str) -> Seen {
        Seen::Publication {
            offset,
            epoch: epoch.into(),
        }
    }

    fn r(offset: u64, epoch: &str) -> Seen {
        Seen::Reset {
            offset,
            epoch: epoch.into(),
        }
    }

    fn start() -> Start {
        Start {
            offset: 3,
            epoch: "a".into(),
        }
    }

    fn acked(list: &[(u64, &str)]) -> Vec<(u64, String)> {
        list.iter().map(|(o, e)| (*o, (*e).to_owned())).collect()
    }

    #[test]
    fn consecutive_deliveries_pass() {
        let seen = [p(4, "a"), p(5, "a"), p(6, "a")];
        let r = check_channel(
            "c",
            &start(),
            &seen,
            &acked(&[(4, "a"), (6, "a")]),
            Strictness::Strict,
        )
        .unwrap();
        assert_eq!(r.delivered, 3);
    }

    #[test]
    fn gaps_duplicates_and_silent_epochs_fail() {
        let strict = Strictness::Announced;
        assert!(check_channel("c", &start(), &[p(5, "a")], &[], strict).is_err());
        assert!(check_channel("c", &start(), &[p(4, "a"), p(4, "a")], &[], strict).is_err());
        assert!(check_channel("c", &start(), &[p(5, "a"), p(4, "a")], &[], strict).is_err());
        assert!(check_channel("c", &start(), &[p(1, "b")], &[], strict).is_err());
    }

    #[test]
    fn a_reset_back_to_an_ended_epoch_is_counted() {
        let back = [
            p(4, "a"),
            r(0, "b"),
            p(1, "b"),
            r(3, "a"),
            p(4, "a"),
            p(5, "a"),
        ];
        let report = check_channel("c", &start(), &back, &[], Strictness::Announced).unwrap();
        assert_eq!(
            (report.resurrected, report.redelivered, report.stale_final),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_reset_announces_a_new_epoch() {
        let seen = [p(4, "a"), r(0, "b"), p(1, "b")];
        let acks = acked(&[(4, "a"), (5, "a"), (1, "b")]);
        let report = check_channel("c", &start(), &seen, &acks, Strictness::Announced).unwrap();
        assert_eq!((report.resets, report.excused), (1, 1));
        // ...which a planned move must never need.
        assert!(check_channel("c", &start(), &seen, &acks, Strictness::Strict).is_err());
    }

    #[test]
    fn an_acknowledged_publication_in_a_live_epoch_must_arrive() {
        let seen = [p(4, "a"), r(0, "b"), p(1, "b")];
        let acks = acked(&[(2, "b")]);
        assert!(check_channel("c", &start(), &seen, &acks, Strictness::Announced).is_err());
    }
}
