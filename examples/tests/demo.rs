//! The demo, run as a new user runs it: every row as expected, exit code 0, in seconds.

use std::time::{Duration, Instant};

#[test]
fn the_demo_passes_every_row() {
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .env_clear()
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let rows: Vec<&str> = stdout.lines().filter(|l| l.ends_with(" ok")).collect();
    assert_eq!(rows.len(), 17, "{stdout}");
    assert!(
        stdout.contains("17 of 17 deliveries answered as expected by both receivers"),
        "{stdout}"
    );
    for expected in [
        "valid run.completed",
        "valid test",
        "a type AIRMY adds later",
        "signed with the previous secret (rotation)",
        "tampered body",
        "stale created_at",
        "body over the 2 MiB limit, sent chunked",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    assert!(!stdout.contains("UNEXPECTED"));
    // The second act: lost without an inbox, nothing lost with one.
    assert!(
        stdout.contains("without an inbox             acknowledged 0 of 5, handled 0 of 5"),
        "{stdout}"
    );
    assert!(
        stdout.contains("acknowledged 5 of 5, handled 5 of 5"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing lost"), "{stdout}");
}
