//! A second yardstick beside [`crate::baseline`]'s: the same small
//! loopback `write()`, but each one wakes its reader, a thread asleep in
//! `epoll_wait` on another core, as a server's write of a delivery wakes a
//! client that was waiting for it. The first yardstick's writes wake
//! nobody (nobody reads), so they leave out what the kernel does for the
//! wake-up in the writer's own time: the epoll callback, waking the
//! reader's thread and, the reader being on another core, the
//! inter-processor interrupt (on a virtual machine, an exit to the
//! hypervisor). Both are reported; a server's ratio against this one says
//! how far it is from a write that does what its writes do.
//!
//! Each write is followed by a pause long enough for the reader to read it
//! and sleep again; the writer's CPU over writes and pauses, less its CPU
//! over the same pauses without writes, is what the writes cost.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags},
    unistd::Pid,
};
use serde::Serialize;

use crate::baseline::{WRITE_BYTES, socket_pairs, thread_cpu_seconds};

/// Writes timed, in [`ROUNDS`] rounds: each costs a pause, so fewer than
/// the first yardstick's.
pub const WRITES: u64 = 3_000;

/// Rounds; the median round's figure counts.
const ROUNDS: u64 = 3;

/// The pause after each write: the reader reads 64 bytes in a few µs and
/// is back in `epoll_wait` long before it ends.
const PAUSE: Duration = Duration::from_micros(100);

/// Socket pairs written round robin, as in the first yardstick (each
/// with `TCP_NODELAY`).
const PAIRS: usize = 500;

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct WakingWrite {
    /// Writes made.
    pub writes: u64,
    /// CPU time (user and kernel) of the writing thread per write, µs,
    /// the pauses' own cost taken off.
    pub cpu_us: f64,
    /// Times the reader came out of `epoll_wait` with data, per write: 1
    /// when every write found it asleep.
    pub wakes_per_write: f64,
    /// The cores the writer and the reader ran on.
    pub writer_cpu: usize,
    pub reader_cpu: usize,
}

/// What the writer timed.
struct Timed {
    writer_cpu: usize,
    per_round: u64,
    /// The median round's CPU µs per write.
    cpu_us: f64,
}

/// Times `writes` writes that each wake a reader on another core; `None`
/// when this process may use only one core.
pub fn measure(writes: u64) -> io::Result<Option<WakingWrite>> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    let Some(reader_cpu) = (0..CpuSet::count()).find(|&c| allowed.is_set(c).unwrap_or(false))
    else {
        return Ok(None);
    };
    let pairs = socket_pairs(PAIRS)?;
    let (writers, readers): (Vec<TcpStream>, Vec<TcpStream>) = pairs.into_iter().unzip();
    let stop = Arc::new(AtomicBool::new(false));
    let wakes = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, wakes) = (stop.clone(), wakes.clone());
        std::thread::spawn(move || read_until(readers, reader_cpu, &stop, &wakes))
    };
    // A thread of its own, so that its core does not outlive the
    // measurement in the caller's (pooled) thread.
    let writer = std::thread::spawn(move || write_paced(writers, reader_cpu, writes));
    let (timed, writers) = writer.join().expect("the writer does not panic");
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader does not panic")?;
    // Closed only now: an end of stream would keep the reader's level-
    // triggered epoll ready, and a reader that never sleeps, under a
    // real-time policy (`chrt -f`), keeps its core from the thread that
    // would stop it.
    drop(writers);
    let Some(Timed {
        writer_cpu,
        per_round,
        cpu_us,
    }) = timed?
    else {
        return Ok(None);
    };
    let made = per_round * ROUNDS;
    Ok(Some(WakingWrite {
        writes: made,
        cpu_us: (cpu_us * 1000.0).round() / 1000.0,
        wakes_per_write: (wakes.load(Ordering::Relaxed) as f64 / made as f64 * 1000.0).round()
            / 1000.0,
        writer_cpu,
        reader_cpu,
    }))
}

/// Pins the calling thread to a core other than `reader_cpu`, then times
/// rounds of writes with pauses against rounds of pauses alone (`None`
/// when no other core can be had); hands back the sockets, still open.
fn write_paced(
    mut writers: Vec<TcpStream>,
    reader_cpu: usize,
    writes: u64,
) -> (io::Result<Option<Timed>>, Vec<TcpStream>) {
    let timed = time_paced(&mut writers, reader_cpu, writes);
    (timed, writers)
}

fn time_paced(
    writers: &mut [TcpStream],
    reader_cpu: usize,
    writes: u64,
) -> io::Result<Option<Timed>> {
    let Some(writer_cpu) = (0..CpuSet::count())
        .filter(|&c| c != reader_cpu)
        .find(|&c| pin(c).is_ok())
    else {
        return Ok(None);
    };
    let chunk = [b'x'; WRITE_BYTES];
    let per_round = (writes / ROUNDS).max(1);
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let cpu = thread_cpu_seconds();
        for i in 0..per_round {
            writers[i as usize % PAIRS].write_all(&chunk)?;
            std::thread::sleep(PAUSE);
        }
        let with_writes = thread_cpu_seconds() - cpu;
        let cpu = thread_cpu_seconds();
        for _ in 0..per_round {
            std::thread::sleep(PAUSE);
        }
        let pauses = thread_cpu_seconds() - cpu;
        rounds.push((with_writes - pauses) / per_round as f64 * 1e6);
    }
    rounds.sort_by(f64::total_cmp);
    Ok(Some(Timed {
        writer_cpu,
        per_round,
        cpu_us: rounds[rounds.len() / 2],
    }))
}

/// On core `cpu`, reads whatever arrives on `readers`, sleeping in
/// `epoll_wait` in between, until `stop`; counts the wake-ups with data.
fn read_until(
    mut readers: Vec<TcpStream>,
    cpu: usize,
    stop: &AtomicBool,
    wakes: &AtomicU64,
) -> io::Result<()> {
    pin(cpu)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, r) in readers.iter().enumerate() {
        r.set_nonblocking(true)?;
        epoll.add(r.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
    }
    let mut events = vec![EpollEvent::empty(); 64];
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        // Wakes now and then to see `stop`; a write wakes it at once.
        let ready = epoll.wait(&mut events, 50u16)?;
        if ready > 0 {
            wakes.fetch_add(1, Ordering::Relaxed);
        }
        for e in &events[..ready] {
            let r = &mut readers[e.data() as usize];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => {
                        // Its writer is gone: never ready again.
                        epoll.delete(r.as_fd())?;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Pins the calling thread to core `cpu`.
fn pin(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(io::Error::from)?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)
}
