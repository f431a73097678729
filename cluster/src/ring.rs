//! Which live broker owns a channel (e.g. `chat:room1`) or a user's routing
//! entry, decided by a consistent hash ring.
//!
//! # The ring
//!
//! Keys and brokers are hashed onto the same 64-bit circle. A key is owned by
//! the first broker point at or clockwise after the key's point. When a broker
//! joins, it only takes keys from the arcs just before its own points; when it
//! leaves, only its keys move, each to the next broker clockwise. Nothing
//! reshuffles between brokers that stayed, which keeps hand-offs (history,
//! presence, subscriptions) proportional to the membership change.
//!
//! # Why so many virtual nodes
//!
//! With one point per broker the arcs are wildly uneven. Each broker therefore
//! gets [`VNODES_PER_BROKER`] points; its load is the sum of that many roughly
//! independent arcs, so its relative spread shrinks like `1/sqrt(vnodes)`. The
//! `consistent_hash_ring` default of 10 points left the busiest broker with
//! 1.6x to 2.4x the mean load; the busiest broker of a cluster must carry
//! every hot channel it happens to own, so we keep max/mean at or under 1.15
//! for 5 to 20 brokers (see the constant for the numbers).
//!
//! # Why hash explicit bytes
//!
//! Every node must place every key on the same broker, including nodes built
//! by another compiler version or on another architecture. `std::hash::Hash`
//! promises none of that: `str` appends a `0xff` terminator as an
//! implementation detail, `usize` changes width, and integer writes default to
//! native endianness. So keys are wrapped in newtypes whose `Hash` impl hands
//! the hasher one explicit byte string, and `StableHasher` (FNV-1a 64 plus
//! the splitmix64 finalizer) turns integers into fixed-width little-endian
//! bytes. Golden vectors in the tests pin the resulting placement forever.
//!
//! A broker's points are `H(le64(H(name)) ++ le32(i))` for `i` in
//! `0..VNODES_PER_BROKER`, and a key's point is `H(key bytes)`, where `H` is
//! `StableHasher`. Adding points later (a bigger constant) keeps the old ones.
//!
//! # Failover order
//!
//! [`Ring::failover`] walks clockwise from the key's point and lists each
//! broker the first time it is met. The head is the owner; the second broker
//! is exactly the one that owns the key once the owner leaves the ring, the
//! third the one that owns it once the first two have left, and so on. The
//! ring crate's own `replicas()` re-hashes the key for each replica, which
//! does not have that property, so it is not used.
//!
//! # How the crate is used
//!
//! The hash table itself is a `consistent_hash_ring::Ring`, and ownership
//! comes from its `try_get`. Two things are done around it:
//!
//! * Its builder inserts each point with `Vec::insert` at a random position,
//!   which is quadratic: about 54 ms for 20 brokers at 1024 points each in a
//!   release build. We compute the points ourselves, sort them, and hand the
//!   crate one single-point entry per virtual node in ascending order, so each
//!   insert appends. We cannot instead feed it its own per-node vnode chains
//!   (`hash(hash(...))`) in sorted order: after every insert the crate deletes
//!   whatever sits at the next chain hash, assuming it is a stale vnode of a
//!   lighter-weighted node, and in a sorted feed that is a live point.
//! * It has no clockwise cursor, so the failover walk uses a copy of the
//!   point table read once through its `resident_ranges()`.
//!
//! Everything here is plain data: no I/O, no clocks, no globals. A [`Ring`] is
//! an immutable snapshot of one membership; build a new one when membership
//! changes and share it behind an `Arc`.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::iter::FusedIterator;

use consistent_hash_ring::RingBuilder;

/// Points on the ring per broker.
///
/// A broker's share of the hash space has a relative standard deviation of
/// about `1/sqrt(VNODES_PER_BROKER)`, i.e. 3.1% here, and the busiest of n
/// brokers sits a few deviations above the mean, so the 1.15 max/mean target
/// needs this many points, not tens. Measured as share of hash space over
/// random broker-name sets: with 512 points the busiest of 20 brokers still
/// exceeded 1.15x the mean in about 1.5% of sets; with 1024 (300 sets per
/// size) the worst was 1.11 at 5, 10 and 20 brokers. Cost is linear: about
/// 20k points, 1.3 MB and ~3 ms (release) to build for 20 brokers, and a
/// lookup stays one binary search.
pub const VNODES_PER_BROKER: u32 = 1024;

/// Domain tag mixed into [`Ring::version`]; change it whenever the placement
/// formula changes so that nodes running different formulas disagree loudly
/// instead of silently routing the same channel to different brokers.
const PLACEMENT_SCHEME: &[u8] = b"switchboard/ring/fnv1a64-splitmix64/v1";

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Deterministic 64-bit hasher: FNV-1a 64 over the written bytes, then the
/// splitmix64 finalizer on `finish`.
///
/// FNV-1a is specified byte by byte, fits in four lines and needs no
/// dependency whose output could change under us, but it diffuses short inputs
/// poorly into the high bits, and ring placement cares about all 64 bits. The
/// splitmix64 finalizer is a bijection with full avalanche, so it fixes the
/// spread without adding collisions. Both halves are checked against their
/// published test vectors. Not keyed, so not DoS-resistant; it cannot be,
/// since every node must compute the same placement.
#[derive(Clone, Copy, Debug)]
struct StableHasher {
    state: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher {
            state: FNV_OFFSET_BASIS,
        }
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state ^= u64::from(byte);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    fn finish(&self) -> u64 {
        splitmix64_finalize(self.state)
    }

    // The ring crate hashes its own u64s (e.g. `hash(hash)`), and the std
    // defaults write native-endian bytes; pin every integer to little endian
    // and pointer-sized ones to 8 bytes so big-endian and 32-bit builds agree.
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }
    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_i8(&mut self, i: i8) {
        self.write_u8(i as u8);
    }
    fn write_i16(&mut self, i: i16) {
        self.write_u16(i as u16);
    }
    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as i64 as u64);
    }
}

/// Stafford's "mix13" as used by splitmix64.
fn splitmix64_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hands [`StableHasher`] to the ring crate.
#[derive(Clone, Copy, Debug, Default)]
struct StableBuildHasher;

impl BuildHasher for StableBuildHasher {
    type Hasher = StableHasher;

    fn build_hasher(&self) -> StableHasher {
        StableHasher::default()
    }
}

/// Stable 64-bit hash of explicit bytes; the same function the ring uses,
/// the same on every machine and build (what is stored by it, such as the
/// brokers' bucketed floors, depends on that).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hasher = StableHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

/// A channel name or user routing key as the ring crate sees it: the raw
/// UTF-8 bytes, written once, so `str`'s std `Hash` (and its terminator) never
/// takes part.
struct KeyBytes<'a>(&'a [u8]);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// One point of one broker, the unit the ring crate stores.
///
/// `broker` indexes the snapshot's sorted broker list and takes no part in the
/// hash, so a broker's points do not move when others join or leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VNode {
    broker: u32,
    name_hash: u64,
    replica: u32,
}

impl VNode {
    /// The explicit bytes that place this point: fixed width, so no two
    /// (name hash, replica) pairs share an encoding.
    fn placement_bytes(&self) -> [u8; 12] {
        let mut bytes = [0; 12];
        bytes[..8].copy_from_slice(&self.name_hash.to_le_bytes());
        bytes[8..].copy_from_slice(&self.replica.to_le_bytes());
        bytes
    }

    fn point(&self) -> u64 {
        stable_hash(&self.placement_bytes())
    }
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.placement_bytes());
    }
}

/// A maximal run of the circle owned by one broker, ending at `end`
/// (inclusive) and starting just after the previous span's end.
#[derive(Clone, Copy, Debug)]
struct Span {
    end: u64,
    broker: u32,
}

/// An immutable ownership snapshot for one set of live brokers.
///
/// Cloning copies the point table (about 64 bytes per point); share a
/// snapshot behind an `Arc` rather than cloning it per request.
#[derive(Clone)]
pub struct Ring {
    /// Sorted and deduplicated, so every node that sees the same members
    /// builds byte-for-byte the same table regardless of arrival order.
    brokers: Vec<String>,
    table: consistent_hash_ring::Ring<VNode, StableBuildHasher>,
    /// The same circle as `table`, in clockwise order with runs of one broker
    /// merged, for the failover walk the crate cannot do.
    spans: Vec<Span>,
    /// Brokers that own at least one span. Equal to `brokers.len()` unless
    /// 64-bit point collisions erased every point of a broker.
    placed: usize,
    version: u64,
}

impl Ring {
    /// Builds the ring for a set of broker names. Order and duplicates in the
    /// input do not matter.
    pub fn new<I, S>(brokers: I) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut brokers: Vec<String> = brokers.into_iter().map(Into::into).collect();
        brokers.sort_unstable();
        brokers.dedup();

        let mut points = Vec::with_capacity(brokers.len() * VNODES_PER_BROKER as usize);
        for (index, name) in brokers.iter().enumerate() {
            let broker = u32::try_from(index).expect("fewer than 2^32 brokers");
            let name_hash = stable_hash(name.as_bytes());
            for replica in 0..VNODES_PER_BROKER {
                let vnode = VNode {
                    broker,
                    name_hash,
                    replica,
                };
                points.push((vnode.point(), vnode));
            }
        }
        // Ascending order makes every crate insert an append. On a (2^-64)
        // tie the crate keeps the later insert; sorting by broker too makes
        // that choice depend only on the names.
        points.sort_unstable_by_key(|&(point, vnode)| (point, vnode.broker, vnode.replica));

        // One point per crate entry: the points are already the vnodes.
        let table = RingBuilder::new(StableBuildHasher)
            .vnodes(1)
            .nodes_iter(points.into_iter().map(|(_, vnode)| vnode))
            .build();

        let mut spans: Vec<Span> = Vec::new();
        for range in table.resident_ranges() {
            let end = *range.keys().end();
            let broker = range.node().broker;
            match spans.last_mut() {
                Some(last) if last.broker == broker => last.end = end,
                _ => spans.push(Span { end, broker }),
            }
        }
        let mut present = vec![false; brokers.len()];
        for span in &spans {
            present[span.broker as usize] = true;
        }
        let placed = present.iter().filter(|&&p| p).count();

        let version = digest(&brokers);
        Ring {
            brokers,
            table,
            spans,
            placed,
            version,
        }
    }

    /// True when there are no brokers; every lookup then returns nothing.
    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty()
    }

    /// Number of distinct brokers.
    pub fn len(&self) -> usize {
        self.brokers.len()
    }

    /// Broker names in ascending byte order.
    pub fn brokers(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.brokers.iter().map(String::as_str)
    }

    /// Whether `broker` is a member of this snapshot.
    pub fn contains(&self, broker: &str) -> bool {
        self.brokers
            .binary_search_by(|name| name.as_str().cmp(broker))
            .is_ok()
    }

    /// The broker that owns `key` (a channel name or a user routing key).
    pub fn owner(&self, key: &str) -> Option<&str> {
        self.table
            .try_get(KeyBytes(key.as_bytes()))
            .map(|vnode| self.brokers[vnode.broker as usize].as_str())
    }

    /// Every broker once, in the order they would own `key` as brokers ahead
    /// of them leave: the owner first, then whoever takes over from it, and
    /// so on. Lazy, so `take(n)` only walks as far as it needs.
    pub fn failover(&self, key: &str) -> Failover<'_> {
        let point = stable_hash(key.as_bytes());
        let mut cursor = self.spans.partition_point(|span| span.end < point);
        // The last span always ends at u64::MAX, so this only guards the
        // empty ring.
        if cursor == self.spans.len() {
            cursor = 0;
        }
        Failover {
            ring: self,
            cursor,
            budget: self.spans.len(),
            seen: vec![false; self.brokers.len()],
            unseen: self.placed,
        }
    }

    /// Digest of the member set (and of the placement scheme), equal on every
    /// node and build that sees the same members in any order. Two nodes with
    /// equal versions place every key alike.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl PartialEq for Ring {
    fn eq(&self, other: &Self) -> bool {
        self.brokers == other.brokers
    }
}

impl Eq for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("version", &format_args!("{:016x}", self.version))
            .field("brokers", &self.brokers)
            .field("spans", &self.spans.len())
            .finish()
    }
}

/// Length-prefixed so that `["ab", "c"]` and `["a", "bc"]` differ.
fn digest(sorted_brokers: &[String]) -> u64 {
    let mut hasher = StableHasher::default();
    hasher.write(PLACEMENT_SCHEME);
    hasher.write_u64(u64::from(VNODES_PER_BROKER));
    hasher.write_u64(sorted_brokers.len() as u64);
    for name in sorted_brokers {
        hasher.write_u64(name.len() as u64);
        hasher.write(name.as_bytes());
    }
    hasher.finish()
}

/// Iterator returned by [`Ring::failover`].
#[derive(Debug)]
pub struct Failover<'a> {
    ring: &'a Ring,
    cursor: usize,
    /// Spans left before a full lap; one lap meets every placed broker.
    budget: usize,
    seen: Vec<bool>,
    unseen: usize,
}

impl<'a> Iterator for Failover<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let spans = &self.ring.spans;
        while self.unseen > 0 && self.budget > 0 {
            let span = spans[self.cursor];
            self.cursor += 1;
            if self.cursor == spans.len() {
                self.cursor = 0;
            }
            self.budget -= 1;
            let broker = span.broker as usize;
            if !self.seen[broker] {
                self.seen[broker] = true;
                self.unseen -= 1;
                return Some(self.ring.brokers[broker].as_str());
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.unseen, Some(self.unseen))
    }
}

impl ExactSizeIterator for Failover<'_> {}

impl FusedIterator for Failover<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("broker-{i}")).collect()
    }

    fn failover_of(ring: &Ring, key: &str) -> Vec<String> {
        ring.failover(key).map(str::to_owned).collect()
    }

    #[test]
    fn hasher_halves_match_published_vectors() {
        // FNV-1a 64 reference vectors (Fowler/Noll/Vo test suite).
        let fnv = |bytes: &[u8]| {
            let mut hasher = StableHasher::default();
            hasher.write(bytes);
            hasher.state
        };
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
        // splitmix64 outputs for seed 1234567 (Vigna's reference code).
        let mut seed: u64 = 1_234_567;
        let mut next = || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            splitmix64_finalize(seed)
        };
        assert_eq!(next(), 6_457_827_717_110_365_317);
        assert_eq!(next(), 3_203_168_211_198_807_973);
        assert_eq!(next(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn hasher_golden_values() {
        let golden: [(&[u8], u64); 4] = [
            (b"", 0xf52a_15e9_a9b5_e89b),
            (b"chat:room1", 0x1cb3_7906_ec83_c2c7),
            (b"user:alice", 0xa142_dcd1_ff9a_ba65),
            (b"broker-0", 0xd718_8d3b_273a_68ef),
        ];
        for (bytes, expected) in golden {
            assert_eq!(
                stable_hash(bytes),
                expected,
                "{:?} -> {:#018x}",
                String::from_utf8_lossy(bytes),
                stable_hash(bytes)
            );
        }
    }

    #[test]
    fn integers_hash_as_fixed_width_little_endian() {
        let via = |f: &dyn Fn(&mut StableHasher)| {
            let mut hasher = StableHasher::default();
            f(&mut hasher);
            hasher.finish()
        };
        let x: u64 = 0x0102_0304_0506_0708;
        let le = stable_hash(&x.to_le_bytes());
        assert_eq!(via(&|h| h.write_u64(x)), le);
        assert_eq!(via(&|h| x.hash(h)), le);
        assert_eq!(via(&|h| h.write_i64(x as i64)), le);
        assert_eq!(via(&|h| h.write_usize(7)), stable_hash(&7u64.to_le_bytes()));
        assert_eq!(
            via(&|h| h.write_u32(0x0a0b_0c0d)),
            stable_hash(&[0x0d, 0x0c, 0x0b, 0x0a])
        );
        // Keys reach the hasher as their bytes and nothing else.
        assert_eq!(
            via(&|h| KeyBytes(b"chat:room1").hash(h)),
            stable_hash(b"chat:room1")
        );
        // The crate hashes keys through the build hasher; same function.
        assert_eq!(
            StableBuildHasher.hash_one(KeyBytes(b"chat:room1")),
            stable_hash(b"chat:room1")
        );
    }

    /// (brokers, key, failover order with the owner first). Must never change:
    /// a change means nodes on old and new builds route differently. The
    /// expected values were cross-checked with an independent implementation
    /// of the formula in the module docs, not just copied from this one.
    #[test]
    fn golden_placement() {
        let three = ["broker-a", "broker-b", "broker-c"];
        let five = ["eu-1", "eu-2", "us-1", "us-2", "ap-1"];
        let golden: &[(&[&str], &str, &[&str])] = &[
            (&three, "chat:room1", &["broker-c", "broker-a", "broker-b"]),
            (&three, "chat:room2", &["broker-a", "broker-c", "broker-b"]),
            (&three, "user:alice", &["broker-a", "broker-c", "broker-b"]),
            (&three, "", &["broker-c", "broker-a", "broker-b"]),
            (
                &five,
                "chat:room1",
                &["ap-1", "eu-2", "us-2", "us-1", "eu-1"],
            ),
            (
                &five,
                "chat:room2",
                &["ap-1", "eu-1", "us-1", "eu-2", "us-2"],
            ),
            (
                &five,
                "chat:lobby",
                &["eu-2", "us-1", "eu-1", "ap-1", "us-2"],
            ),
            (
                &five,
                "user:alice",
                &["us-2", "eu-1", "ap-1", "eu-2", "us-1"],
            ),
            (&five, "user:bob", &["us-2", "eu-2", "us-1", "ap-1", "eu-1"]),
            (&["solo"], "chat:room1", &["solo"]),
        ];
        for (brokers, key, expected) in golden {
            let ring = Ring::new(brokers.iter().copied());
            let got = failover_of(&ring, key);
            assert_eq!(&got, expected, "{brokers:?} {key:?}");
            assert_eq!(ring.owner(key), expected.first().copied());
        }
    }

    #[test]
    fn golden_versions() {
        assert_eq!(
            Ring::new(Vec::<String>::new()).version(),
            2_516_305_388_114_531_627
        );
        assert_eq!(
            Ring::new(["broker-a", "broker-b", "broker-c"]).version(),
            14_856_187_311_819_340_016
        );
        assert_eq!(
            Ring::new(["eu-1", "eu-2", "us-1", "us-2", "ap-1"]).version(),
            12_637_641_634_040_705_892
        );
    }

    #[test]
    fn membership_order_and_duplicates_do_not_matter() {
        let a = Ring::new(["b2", "b0", "b1"]);
        let b = Ring::new(["b1", "b2", "b0", "b1"]);
        assert_eq!(a, b);
        assert_eq!(a.version(), b.version());
        assert_eq!(a.brokers().collect::<Vec<_>>(), ["b0", "b1", "b2"]);
        for i in 0..200 {
            let key = format!("chan:{i}");
            assert_eq!(failover_of(&a, &key), failover_of(&b, &key));
        }
        assert_ne!(a.version(), Ring::new(["b0", "b1"]).version());
        // Length prefixes keep concatenations apart.
        assert_ne!(
            Ring::new(["ab", "c"]).version(),
            Ring::new(["a", "bc"]).version()
        );
    }

    #[test]
    fn empty_ring() {
        let ring = Ring::new(Vec::<String>::new());
        assert!(ring.is_empty());
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.owner("chat:room1"), None);
        assert_eq!(ring.failover("chat:room1").next(), None);
        assert_eq!(ring.brokers().count(), 0);
    }

    #[test]
    fn failover_lists_every_broker_once_owner_first() {
        let ring = Ring::new(names(7));
        assert!(ring.contains("broker-3") && !ring.contains("broker-7"));
        for i in 0..500 {
            let key = format!("chan:{i}");
            let order = failover_of(&ring, &key);
            assert_eq!(ring.owner(&key), Some(order[0].as_str()));
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, ring.brokers().collect::<Vec<_>>());
            assert_eq!(ring.failover(&key).len(), 7);
        }
    }

    /// The crate's `try_get` and the span walk must agree on every key; the
    /// owner comes from one and failover from the other.
    #[test]
    fn crate_lookup_and_span_walk_agree() {
        for n in [1, 2, 5, 20] {
            let ring = Ring::new(names(n));
            for i in 0..2_000 {
                let key = format!("user:{i}");
                assert_eq!(ring.owner(&key), ring.failover(&key).next());
            }
        }
    }

    /// Feeding points in sorted order is only a speed-up: inserting the same
    /// vnodes in any order gives the same table.
    #[test]
    fn sorted_feed_matches_unsorted_insertion() {
        let ring = Ring::new(names(3));
        let mut vnodes: Vec<VNode> = (0..3u32)
            .flat_map(|broker| {
                let name_hash = stable_hash(format!("broker-{broker}").as_bytes());
                (0..VNODES_PER_BROKER).map(move |replica| VNode {
                    broker,
                    name_hash,
                    replica,
                })
            })
            .collect();
        vnodes.reverse();
        let slow = RingBuilder::new(StableBuildHasher)
            .vnodes(1)
            .nodes_iter(vnodes)
            .build();
        for i in 0..2_000 {
            let key = format!("chan:{i}");
            let broker = slow.try_get(KeyBytes(key.as_bytes())).unwrap().broker;
            assert_eq!(ring.owner(&key), Some(format!("broker-{broker}").as_str()));
        }
    }

    fn max_over_mean(loads: &[f64]) -> f64 {
        let mean = loads.iter().sum::<f64>() / loads.len() as f64;
        loads.iter().copied().fold(0.0, f64::max) / mean
    }

    /// Load measured as share of the 2^64 hash space, which is what channel
    /// counts converge to, without sampling noise; every size from 5 to 20.
    #[test]
    fn hash_space_balance_5_to_20_brokers() {
        for n in 5..=20 {
            let ring = Ring::new(names(n));
            let mut share = vec![0.0; n];
            let mut start = 0u64;
            for span in &ring.spans {
                share[span.broker as usize] += (span.end - start) as f64 + 1.0;
                start = span.end.wrapping_add(1);
            }
            let ratio = max_over_mean(&share);
            assert!(ratio <= 1.15, "{n} brokers: max/mean {ratio:.3}");
        }
    }

    /// Load measured as the number of 100_000 generated channels
    /// ("chan:{i}") each broker owns.
    #[test]
    fn channel_count_balance() {
        let channels: Vec<String> = (0..100_000).map(|i| format!("chan:{i}")).collect();
        for n in [5, 10, 20] {
            let ring = Ring::new(names(n));
            let mut owned: HashMap<&str, f64> = HashMap::new();
            for channel in &channels {
                *owned.entry(ring.owner(channel).unwrap()).or_default() += 1.0;
            }
            assert_eq!(owned.len(), n);
            let ratio = max_over_mean(&owned.values().copied().collect::<Vec<_>>());
            assert!(ratio <= 1.15, "{n} brokers: max/mean {ratio:.3}");
        }
    }

    #[test]
    fn failover_successor_is_the_takeover_broker() {
        // Rings keyed by their member list, built once each.
        let mut rings: HashMap<Vec<String>, Ring> = HashMap::new();
        let without = |all: &[String], gone: &[&str]| -> Vec<String> {
            all.iter()
                .filter(|b| !gone.contains(&b.as_str()))
                .cloned()
                .collect()
        };
        for n in [2, 3, 4, 6] {
            let all = names(n);
            let ring = Ring::new(all.clone());
            for i in 0..1_000 {
                let key = format!("chan:{i}");
                let order = failover_of(&ring, &key);
                for k in 1..n.min(3) {
                    let gone: Vec<&str> = order[..k].iter().map(String::as_str).collect();
                    let rest = without(&all, &gone);
                    let smaller = rings.entry(rest.clone()).or_insert_with(|| Ring::new(rest));
                    assert_eq!(
                        smaller.owner(&key),
                        Some(order[k].as_str()),
                        "{n} brokers, {key}, first {k} gone"
                    );
                }
            }
        }
    }

    #[test]
    fn adding_a_broker_moves_a_fair_share_only_to_it() {
        let channels: Vec<String> = (0..20_000).map(|i| format!("chan:{i}")).collect();
        for n in [3, 5, 10] {
            let before = Ring::new(names(n));
            let after = Ring::new(names(n + 1));
            let newcomer = format!("broker-{n}");
            let mut moved = 0;
            for channel in &channels {
                let (old, new) = (before.owner(channel), after.owner(channel));
                if old != new {
                    assert_eq!(new, Some(newcomer.as_str()), "{channel} reshuffled");
                    moved += 1;
                }
            }
            let share = f64::from(moved) / channels.len() as f64;
            let ideal = 1.0 / (n + 1) as f64;
            assert!(
                (share / ideal - 1.0).abs() <= 0.30,
                "{n}->{}: moved {share:.3}, ideal {ideal:.3}",
                n + 1
            );
        }
    }
}
