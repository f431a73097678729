//! The machine's yardstick: the CPU cost of one small `write()` on a
//! loopback TCP socket, measured by the tool itself in the same run, so
//! that a server's CPU per delivery can be read as a number of such writes
//! on any machine (issue 15's target: at most 1.5).

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    thread,
    time::Instant,
};

use serde::Serialize;

/// Bytes per write: about a small delivery's frame header and payload.
pub const WRITE_BYTES: usize = 64;

/// Writes timed: enough for a second or so, far above the clock's
/// microsecond resolution.
pub const WRITES: u64 = 200_000;

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct LoopbackWrite {
    /// Writes made.
    pub writes: u64,
    /// CPU time (user and kernel) of the writing thread per write, µs.
    pub cpu_us: f64,
    /// Wall time per write, µs (the reader shares the core).
    pub wall_us: f64,
}

/// Opens a connected pair of loopback sockets, drains one from a thread of
/// its own, and times `writes` writes of [`WRITE_BYTES`] on the other (with
/// `TCP_NODELAY`, as a server writes frames) in the writer thread's own
/// CPU time: the kernel does the loopback's sending and receiving there.
pub fn measure(writes: u64) -> io::Result<LoopbackWrite> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut writer = TcpStream::connect(listener.local_addr()?)?;
    writer.set_nodelay(true)?;
    let (mut reader, _) = listener.accept()?;
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let chunk = [b'x'; WRITE_BYTES];
    let wall = Instant::now();
    let cpu = thread_cpu_seconds();
    for _ in 0..writes {
        writer.write_all(&chunk)?;
    }
    let cpu = thread_cpu_seconds() - cpu;
    let wall = wall.elapsed().as_secs_f64();
    drop(writer);
    let _ = drain.join();
    let per = |s: f64| (s / writes.max(1) as f64 * 1e6 * 1000.0).round() / 1000.0;
    Ok(LoopbackWrite {
        writes,
        cpu_us: per(cpu),
        wall_us: per(wall),
    })
}

/// The calling thread's CPU time so far, user and kernel.
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(0.0, |u| {
        let (user, system) = (u.user_time(), u.system_time());
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(user) + secs(system)
    })
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> f64 {
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
