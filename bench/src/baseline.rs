//! The machine's yardstick: the CPU cost of one small `write()` on a
//! loopback TCP socket, measured by the tool itself in the same run, so
//! that a server's CPU per delivery can be read as a number of such writes
//! on any machine (issue 15's target: at most 1.5).

use std::{
    io::{self, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    time::Instant,
};

use serde::Serialize;

/// Bytes per write: about a small delivery's frame header and payload.
pub const WRITE_BYTES: usize = 64;

/// Writes timed, in [`ROUNDS`] rounds: enough for a fraction of a second,
/// far above the clock's microsecond resolution.
pub const WRITES: u64 = 100_000;

/// Rounds of writes; the figure is the median round's, so that a round
/// in which another process took the core does not decide it.
const ROUNDS: u64 = 5;

/// Socket pairs written round robin, so that each write finds its
/// socket's previous segment long gone, as a server's write to one of
/// many connections does; a stream of writes to one socket would be
/// merged into large segments by the kernel and cost a fraction of that.
const PAIRS: usize = 500;

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct LoopbackWrite {
    /// Writes made.
    pub writes: u64,
    /// CPU time (user and kernel) of the writing thread per write, µs.
    pub cpu_us: f64,
    /// Wall time per write, µs.
    pub wall_us: f64,
}

/// Opens [`PAIRS`] connected pairs of loopback sockets and times `writes`
/// (in [`ROUNDS`] rounds; the median round counts) writes of [`WRITE_BYTES`] (with `TCP_NODELAY`, as a server writes
/// frames), round robin over them, in the writing thread's own CPU time:
/// the kernel carries each segment through the loopback's sending and
/// receiving there. Nobody reads during the loop (each receive buffer
/// holds its share), so a reader's wake-up is not part of the figure.
pub fn measure(writes: u64) -> io::Result<LoopbackWrite> {
    let mut pairs = socket_pairs(PAIRS)?;
    let chunk = [b'x'; WRITE_BYTES];
    let per_round = (writes / ROUNDS).max(1);
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let wall = Instant::now();
        let cpu = thread_cpu_seconds();
        for i in round * per_round..(round + 1) * per_round {
            pairs[i as usize % PAIRS].0.write_all(&chunk)?;
        }
        rounds.push((thread_cpu_seconds() - cpu, wall.elapsed().as_secs_f64()));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (cpu, wall) = rounds[rounds.len() / 2];
    let per = |s: f64| (s / per_round as f64 * 1e6 * 1000.0).round() / 1000.0;
    Ok(LoopbackWrite {
        writes: per_round * ROUNDS,
        cpu_us: per(cpu),
        wall_us: per(wall),
    })
}

/// `n` connected loopback sockets: (writer, with `TCP_NODELAY`, reader).
pub(crate) fn socket_pairs(n: usize) -> io::Result<Vec<(TcpStream, TcpStream)>> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let writer = TcpStream::connect(listener.local_addr()?)?;
        writer.set_nodelay(true)?;
        let (reader, _) = listener.accept()?;
        pairs.push((writer, reader));
    }
    Ok(pairs)
}

/// The calling thread's CPU time so far, user and kernel, to the
/// nanosecond (`CLOCK_THREAD_CPUTIME_ID`; `getrusage` counts in scheduler
/// ticks, and read 0 for a short yardstick).
#[cfg(target_os = "linux")]
pub(crate) fn thread_cpu_seconds() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn thread_cpu_seconds() -> f64 {
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_costs_something() {
        let w = measure(2_000).unwrap();
        assert_eq!(w.writes, 2_000);
        assert!(w.wall_us > 0.0);
        if cfg!(target_os = "linux") {
            assert!(w.cpu_us > 0.0, "{w:?}");
        }
    }
}
