//! Where the workspace, its built binaries and the test tools live.

use std::path::{Path, PathBuf};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// The path of a workspace binary built by cargo (`target/<profile>/<name>`), found next
/// to the running test executable. Integration tests of the crate that owns the binary
/// get it built by cargo; `make test` builds all binaries first for the others.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    // target/<profile>/deps/<test-binary>  ->  target/<profile>/<name>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| Path::new("."));
    let path = profile_dir.join(name);
    assert!(path.exists(), "binary {} not found; build it first with `cargo build --workspace --bins`", path.display());
    path
}

/// The path of example `name` of the workspace, built by `cargo build --workspace --examples`.
pub fn cargo_example(name: &str) -> PathBuf {
    let bin = cargo_bin("examples");
    let path = bin.join(name);
    assert!(
        path.exists(),
        "example {} not found; build it first with `cargo build --workspace --examples`",
        path.display()
    );
    path
}

/// Finds a program: the named environment variable, then the project-local tools dir
/// (`.tools/py/bin`, filled by `scripts/test-deps.sh`), then `PATH`.
pub(crate) fn find_program(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let local = workspace_root().join(".tools/py/bin").join(name);
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
}
