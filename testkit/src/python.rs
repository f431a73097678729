//! Python tools from PyPI for tests that drive third-party clients and
//! checkers: a virtualenv made once per pinned requirements file, and
//! commands run to completion within a deadline.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

/// Runs `program` with `args` in `cwd`; panics, with what it printed,
/// unless it succeeds within `within`.
pub async fn run(program: &Path, args: &[&str], cwd: &Path, within: Duration) -> Output {
    let out = tokio::time::timeout(
        within,
        tokio::process::Command::new(program)
            .args(args)
            .current_dir(cwd)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} {args:?} did not finish within {within:?}",
            program.display()
        )
    })
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{}{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The virtualenv at `venv` with `requirements` (a path under `cwd`, whose
/// text is `pins`) installed; made again when the pins changed since. Its
/// python is returned. Tests of one binary run side by side: one makes a
/// venv while the others wait (two `venv --clear` at once break each
/// other's pip).
pub async fn venv(venv: &Path, cwd: &Path, requirements: &str, pins: &str) -> PathBuf {
    static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = MAKING.lock().await;
    let stamp = venv.join("requirements.txt");
    let python = venv.join("bin/python");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins) && python.exists() {
        return python;
    }
    let python3 = std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let venv_arg = venv.to_str().expect("UTF-8 path");
    let args = ["-m", "venv", "--clear", venv_arg];
    run(Path::new(&python3), &args, cwd, Duration::from_secs(120)).await;
    let args = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "-r",
        requirements,
    ];
    run(&python, &args, cwd, Duration::from_secs(600)).await;
    std::fs::write(&stamp, pins).expect("the venv's stamp is written");
    python
}
