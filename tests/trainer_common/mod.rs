//! Running the `trainer` binary from integration tests.

use std::process::{Command, Output};

pub fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer")
}

/// stdout of a run that must have succeeded (stderr shown if not).
pub fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "trainer failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
