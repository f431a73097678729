//! One budget for every socket a gateway accepts, whatever it turns out to
//! speak (WebSocket, HTTP/1, HTTP/2, the server API): counted from accept
//! to close, so that idle or half-open sockets cannot use up the file
//! descriptors that WebSocket clients need. Per client address, a cap on
//! open sockets and a token bucket on new ones keep one source from taking
//! the whole budget.
//!
//! [`SocketBudget`] is the counting, sans-IO (the caller passes the time);
//! [`SocketPermit`] holds one place until dropped, and [`Permitted`] ties
//! it to the socket, so that it follows the socket through an HTTP upgrade.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv6Addr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{config::Limits, rate_limit::TokenBucket, refusal::Limit, telemetry};

/// The budget's limits (from [`Limits`]).
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    pub max_sockets: usize,
    pub max_sockets_per_ip: usize,
    pub rate_per_ip: f64,
    pub burst_per_ip: u32,
}

impl From<&Limits> for BudgetLimits {
    fn from(l: &Limits) -> Self {
        Self {
            max_sockets: l.max_sockets,
            max_sockets_per_ip: l.max_sockets_per_ip,
            rate_per_ip: l.connection_rate_per_ip,
            burst_per_ip: l.connection_burst_per_ip,
        }
    }
}

/// One client address's sockets and its bucket of new ones.
#[derive(Debug)]
struct Source {
    open: usize,
    bucket: TokenBucket,
}

#[derive(Debug)]
struct State {
    open: usize,
    sources: HashMap<IpAddr, Source>,
    /// Sources held after the last sweep; the next sweep comes when twice
    /// as many are, so sweeping costs O(1) per accept.
    swept_to: usize,
}

/// Sources kept without a sweep: a sweep is a pass over all of them.
const SWEEP_FLOOR: usize = 1024;

#[derive(Debug)]
pub struct SocketBudget {
    limits: BudgetLimits,
    state: Mutex<State>,
}

impl SocketBudget {
    pub fn new(limits: BudgetLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State {
                open: 0,
                sources: HashMap::new(),
                swept_to: 0,
            }),
        }
    }

    /// Counts a socket from `ip`, or says which limit refuses it. A refused
    /// socket costs its source a token all the same, so that a source
    /// hammering a full budget stays throttled once places free.
    pub fn try_admit(&self, ip: IpAddr, now: Instant) -> Result<(), Limit> {
        let l = self.limits;
        let mut state = self.state.lock();
        let state = &mut *state;
        if state.sources.len() >= (2 * state.swept_to).max(SWEEP_FLOOR) {
            state
                .sources
                .retain(|_, s| s.open > 0 || !s.bucket.is_full(now));
            state.swept_to = state.sources.len();
        }
        let source = state
            .sources
            .entry(source_of(ip))
            .or_insert_with(|| Source {
                open: 0,
                bucket: TokenBucket::new(l.rate_per_ip, l.burst_per_ip, now),
            });
        if !source.bucket.try_take(now) {
            return Err(Limit::ConnectionRate);
        }
        if source.open >= l.max_sockets_per_ip {
            return Err(Limit::SocketsPerIp);
        }
        if state.open >= l.max_sockets {
            return Err(Limit::Sockets);
        }
        source.open += 1;
        state.open += 1;
        Ok(())
    }

    /// Frees the place of a socket from `ip` that [`Self::try_admit`] counted.
    pub fn release(&self, ip: IpAddr) {
        let mut state = self.state.lock();
        state.open = state.open.saturating_sub(1);
        if let Some(source) = state.sources.get_mut(&source_of(ip)) {
            source.open = source.open.saturating_sub(1);
        }
    }

    /// Sockets counted now.
    pub fn open(&self) -> usize {
        self.state.lock().open
    }

    /// [`Self::try_admit`] now, with a permit that releases on drop.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SocketPermit, Limit> {
        self.try_admit(ip, Instant::now())?;
        telemetry::sockets(1.0);
        Ok(SocketPermit {
            budget: self.clone(),
            ip,
        })
    }
}

/// The address a limit counts by: IPv4 addresses as they are (an IPv6
/// form of one included), IPv6 by their /64, which one host usually holds
/// all of.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One socket's place in the budget, until dropped.
#[derive(Debug)]
pub struct SocketPermit {
    budget: Arc<SocketBudget>,
    ip: IpAddr,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.budget.release(self.ip);
        telemetry::sockets(-1.0);
    }
}

/// A socket with its place in the budget: the place frees when the socket
/// closes, through whatever owns it by then (HTTP, or a WebSocket after
/// the upgrade).
pub struct Permitted<S> {
    inner: S,
    _permit: SocketPermit,
}

impl<S> Permitted<S> {
    pub fn new(inner: S, permit: SocketPermit) -> Self {
        Self {
            inner,
            _permit: permit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Permitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Permitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(max: usize, per_ip: usize, rate: f64, burst: u32) -> SocketBudget {
        SocketBudget::new(BudgetLimits {
            max_sockets: max,
            max_sockets_per_ip: per_ip,
            rate_per_ip: rate,
            burst_per_ip: burst,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_budget_counts_every_socket_until_released() {
        let t = Instant::now();
        let b = budget(3, 10, 1000.0, 1000);
        for i in 1..=3 {
            assert_eq!(b.try_admit(ip(&format!("10.0.0.{i}")), t), Ok(()));
        }
        assert_eq!(b.try_admit(ip("10.0.0.9"), t), Err(Limit::Sockets));
        b.release(ip("10.0.0.2"));
        assert_eq!(b.open(), 2);
        assert_eq!(b.try_admit(ip("10.0.0.9"), t), Ok(()));
    }

    #[test]
    fn one_address_is_capped_and_others_are_not() {
        let t = Instant::now();
        let b = budget(100, 2, 1000.0, 1000);
        assert_eq!(b.try_admit(ip("127.0.0.1"), t), Ok(()));
        assert_eq!(b.try_admit(ip("127.0.0.1"), t), Ok(()));
        assert_eq!(b.try_admit(ip("127.0.0.1"), t), Err(Limit::SocketsPerIp));
        assert_eq!(b.try_admit(ip("127.0.0.2"), t), Ok(()));
        // An IPv4 address in IPv6 form is the same source.
        assert_eq!(
            b.try_admit(ip("::ffff:127.0.0.1"), t),
            Err(Limit::SocketsPerIp)
        );
        b.release(ip("127.0.0.1"));
        assert_eq!(b.try_admit(ip("127.0.0.1"), t), Ok(()));
    }

    #[test]
    fn ipv6_counts_by_64() {
        let t = Instant::now();
        let b = budget(100, 1, 1000.0, 1000);
        assert_eq!(b.try_admit(ip("2001:db8:1:2::1"), t), Ok(()));
        assert_eq!(
            b.try_admit(ip("2001:db8:1:2:ffff::9"), t),
            Err(Limit::SocketsPerIp)
        );
        assert_eq!(b.try_admit(ip("2001:db8:1:3::1"), t), Ok(()));
    }

    #[test]
    fn new_sockets_per_address_are_rate_limited() {
        let t = Instant::now();
        let b = budget(100, 100, 2.0, 3);
        for _ in 0..3 {
            assert_eq!(b.try_admit(ip("10.1.1.1"), t), Ok(()));
        }
        assert_eq!(b.try_admit(ip("10.1.1.1"), t), Err(Limit::ConnectionRate));
        assert_eq!(b.try_admit(ip("10.1.1.2"), t), Ok(()));
        let later = t + Duration::from_millis(500);
        assert_eq!(b.try_admit(ip("10.1.1.1"), later), Ok(()));
        assert_eq!(
            b.try_admit(ip("10.1.1.1"), later),
            Err(Limit::ConnectionRate)
        );
    }

    #[test]
    fn idle_sources_are_forgotten_and_busy_ones_kept() {
        let t = Instant::now();
        let b = budget(100_000, 10, 1.0, 1);
        assert_eq!(b.try_admit(ip("10.9.9.9"), t), Ok(()));
        for i in 0..SWEEP_FLOOR as u32 * 3 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            b.try_admit(a, t).unwrap();
            b.release(a);
        }
        // Each sweep keeps sources whose bucket has not refilled yet; by
        // `later` all have, and the next sweep drops them.
        let later = t + Duration::from_secs(2);
        for i in 0..SWEEP_FLOOR as u32 * 2 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0c00_0000 + i));
            b.try_admit(a, later).unwrap();
            b.release(a);
        }
        let state = b.state.lock();
        let early = |i| IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
        assert!((0..SWEEP_FLOOR as u32 * 3).all(|i| !state.sources.contains_key(&early(i))));
        assert!(state.sources.len() <= SWEEP_FLOOR * 2 + 1);
        // The open socket's source still counts it.
        assert_eq!(state.sources[&ip("10.9.9.9")].open, 1);
    }

    #[tokio::test]
    async fn a_permit_frees_its_place_when_the_socket_closes() {
        let b = Arc::new(budget(1, 1, 1000.0, 1000));
        let (one, _other) = tokio::io::duplex(8);
        let held = Permitted::new(one, b.admit(ip("10.0.0.1")).unwrap());
        assert_eq!(b.admit(ip("10.0.0.2")).unwrap_err(), Limit::Sockets);
        drop(held);
        assert_eq!(b.open(), 0);
        assert!(b.admit(ip("10.0.0.2")).is_ok());
    }
}
