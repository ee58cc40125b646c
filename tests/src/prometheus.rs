//! Prometheus and promtool at the compose image's release, built from the Go module by
//! `scripts/build-prometheus.sh` (issue 20: Debian's 2.42 is gone from every test).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::repo_file;

/// The directory holding `prometheus` and `promtool`, built once (or found built); the
/// script's error if Go cannot build them.
pub fn tools_dir() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_file("scripts/build-prometheus.sh"))
            .output()
            .map_err(|e| format!("scripts/build-prometheus.sh: {e}"))?;
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !dir.is_empty() {
            Ok(repo_file(&dir))
        } else {
            Err(format!("scripts/build-prometheus.sh failed:\n{}", String::from_utf8_lossy(&out.stderr)))
        }
    })
    .clone()
}

/// `promtool` of that release, as a command (panics naming the script if it cannot be built).
pub fn promtool() -> Command {
    Command::new(tools_dir().unwrap_or_else(|e| panic!("{e}")).join("promtool"))
}

/// The `prometheus` server binary.
pub fn server() -> Result<PathBuf, String> {
    Ok(tools_dir()?.join("prometheus"))
}

/// The release the script builds (its `release=` line).
pub fn release() -> String {
    let script = std::fs::read_to_string(repo_file("scripts/build-prometheus.sh")).expect("the build script");
    script.lines().find_map(|l| l.strip_prefix("release=")).expect("a release= line").to_owned()
}
