//! [`TlsContext`]: a node's current credentials, re-read when their files
//! change. Each new handshake (accepted or dialed) takes the credentials
//! current at that moment; connections already open keep theirs, so a
//! rotation drops nothing. Files are polled by content, which also sees
//! Kubernetes' swap of a mounted secret's symlink.

use std::{sync::Arc, time::Duration};

use parking_lot::RwLock;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    credentials::{Credentials, TlsBytes, TlsError, TlsFiles},
    identity::PeerIdentity,
};

/// How often the files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// A node's credentials, shared by its acceptor and its dialer.
#[derive(Debug)]
pub struct TlsContext {
    files: TlsFiles,
    me: PeerIdentity,
    current: RwLock<Arc<Credentials>>,
}

impl TlsContext {
    /// Loads `files`, whose certificate must name `me`.
    pub fn load(files: TlsFiles, me: PeerIdentity) -> Result<Arc<Self>, TlsError> {
        let credentials = Credentials::load(&files, &me)?;
        export(&credentials);
        Ok(Arc::new(Self {
            files,
            me,
            current: RwLock::new(Arc::new(credentials)),
        }))
    }

    /// The credentials new handshakes use.
    pub fn current(&self) -> Arc<Credentials> {
        self.current.read().clone()
    }

    /// Who this node is.
    pub fn me(&self) -> &PeerIdentity {
        &self.me
    }

    /// Re-reads the files every [`RELOAD_EVERY`] until `shutdown`, in a
    /// task on `tracker`.
    pub fn watch(self: &Arc<Self>, tracker: &TaskTracker, shutdown: CancellationToken) {
        let this = self.clone();
        tracker.spawn(async move {
            let mut seen = TlsBytes::read(&this.files).ok();
            let mut ticks = tokio::time::interval(RELOAD_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => this.reload_if_changed(&mut seen),
                }
            }
        });
    }

    /// Takes the files' contents if they changed since `seen` and load;
    /// otherwise keeps the current credentials. A change that does not load
    /// (a half-written rotation, a certificate for someone else) is logged
    /// once and retried when the files change again.
    fn reload_if_changed(&self, seen: &mut Option<TlsBytes>) {
        let bytes = match TlsBytes::read(&self.files) {
            Ok(bytes) => bytes,
            Err(e) => {
                if seen.take().is_some() {
                    tracing::error!(error = %e, "TLS credentials unreadable; keeping the loaded ones");
                    metrics::counter!("switchboard_tls_reloads_total", "result" => "error")
                        .increment(1);
                }
                return;
            }
        };
        if seen.as_ref() == Some(&bytes) {
            return;
        }
        *seen = Some(bytes.clone());
        match Credentials::from_bytes(&bytes, &self.me) {
            Ok(credentials) => {
                tracing::info!(serial = %credentials.serial, "TLS credentials reloaded");
                metrics::counter!("switchboard_tls_reloads_total", "result" => "ok").increment(1);
                export(&credentials);
                let old = std::mem::replace(&mut *self.current.write(), Arc::new(credentials));
                if old.serial != self.current().serial {
                    metrics::gauge!("switchboard_tls_certificate_serial_info", "serial" => old.serial.clone())
                        .set(0.0);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS credentials changed but do not load; keeping the loaded ones");
                metrics::counter!("switchboard_tls_reloads_total", "result" => "error")
                    .increment(1);
            }
        }
    }
}

/// Exports the serial of the certificate in use (1; a replaced one goes to
/// 0), so that a rotation can be seen from outside.
fn export(credentials: &Credentials) {
    metrics::gauge!("switchboard_tls_certificate_serial_info", "serial" => credentials.serial.clone())
        .set(1.0);
}
