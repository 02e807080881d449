//! [`workspace_binary`]: a binary of another package of the workspace, for a test that runs
//! it beside its own (cargo gives a test `CARGO_BIN_EXE_*` for its own package's binaries
//! only): the receivers' tests drive `airmy-webhook`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The binary `bin` of the workspace package `package`, built first (`cargo build -p PACKAGE
/// --bin BIN`, once per test process, in the test's own target directory and profile): its
/// path.
///
/// # Panics
///
/// When cargo cannot build it (the build's errors are on standard error) or the test binary
/// is not where cargo puts test binaries (`<target>/<profile>/deps/`).
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = built.iter().find(|(name, _)| name == bin) {
        return path.clone();
    }
    // <target>/<profile>/deps/<test>: the profile's directory is two levels up.
    let test = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary in <target>/<profile>/deps")
        .to_path_buf();
    let target = profile_dir
        .parent()
        .expect("a target directory")
        .to_path_buf();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--profile",
            &profile,
            "-p",
            package,
            "--bin",
            bin,
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} was not built", path.display());
    built.push((bin.to_owned(), path.clone()));
    path
}
