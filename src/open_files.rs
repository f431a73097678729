//! The open-file limit. Every client connection is a file descriptor, and
//! the usual soft limit (1024) would cap a gateway, or the load tool, at
//! about a thousand connections; the hard limit is what the operator (or
//! the container) actually grants.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft and hard `RLIMIT_NOFILE` after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFiles {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard one and returns both. A
/// process that cannot read or change its limits keeps what it has: the
/// limit then shows up as refused connections, which the logs name.
pub(crate) fn raise() -> Option<OpenFiles> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        return Some(OpenFiles { soft, hard });
    }
    Some(OpenFiles { soft: hard, hard })
}

/// [`raise`], with the outcome in the log: the limit caps how many
/// connections a role can hold, so an operator looking at refused
/// connections finds it there.
pub(crate) fn raise_and_log() {
    match raise() {
        Some(limits) => tracing::info!(
            soft = limits.soft,
            hard = limits.hard,
            "open-file limit (caps connections)"
        ),
        None => tracing::warn!("could not read the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let limits = super::raise().expect("limits readable");
        assert_eq!(limits.soft, limits.hard);
    }
}
