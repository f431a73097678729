//! Gossip keys for tests: the one every process of a test run shares, and
//! keys of their own for scenarios that need another (another cluster's,
//! a rotation).

use anyhow::Context;

/// Key files made so far by this process: each gets a name of its own.
static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The gossip key file every process started by this test run shares
/// (made once, in the temporary directory).
pub fn gossip_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let path = new_gossip_key("cluster").expect("writing the test cluster's gossip key");
        path.to_str().expect("temp path is UTF-8").to_owned()
    })
}

/// A gossip key file with one new key, for scenarios that use keys of
/// their own (another cluster's, a rotation); returns its path.
pub fn new_gossip_key(tag: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "switchboard-{tag}-{}-{}.key",
        std::process::id(),
        MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let key = switchboard_cluster::keyring::generate_key();
    std::fs::write(&path, format!("{key}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
