//! Runs the conformance table through the core and prints what each delivery gets.
//!
//! ```text
//! cargo run -p airmy-verify --example conformance
//! ```
//!
//! Every row is a request signed (or mis-signed) the way AIRMY signs, checked by
//! `testing::conformance_verifier()`; the exit code is 0 only if every row gets the status the
//! table expects.

use std::process::ExitCode;

use airmy_verify::testing;

fn main() -> ExitCode {
    let verifier = testing::conformance_verifier();
    let cases = testing::conformance_cases();
    let mut failures = 0;
    println!("{:<42} {:<26} {:<26} result", "case", "expected", "got");
    for case in &cases {
        let (status, code) = match testing::check_case_with_core(&verifier, case) {
            Ok(_) => (200, None),
            Err(err) => (err.status(), Some(err.code())),
        };
        let ok = status == case.status && code == case.error;
        failures += usize::from(!ok);
        let show =
            |status: u16, code: Option<&str>| format!("{status} {}", code.unwrap_or("accepted"));
        println!(
            "{:<42} {:<26} {:<26} {}",
            case.name,
            show(case.status, case.error),
            show(status, code),
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    println!("{} passed, {failures} failed", cases.len() - failures);
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
