//! The km command line as a user meets it.

use std::process::Command;

use crate::support::km_bin;

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run km");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn version_is_printed() {
    let (ok, stdout, _) = run(Command::new(km_bin()).arg("--version"));
    assert!(ok);
    assert!(stdout.starts_with("km "), "unexpected version output: {stdout}");
}

#[test]
fn help_lists_the_subcommands() {
    let (ok, stdout, _) = run(Command::new(km_bin()).arg("help"));
    assert!(ok);
    assert!(stdout.contains("podmaster"), "help output lacks podmaster: {stdout}");
}

#[test]
fn unknown_subcommand_is_a_clear_error() {
    let (ok, _, stderr) = run(Command::new(km_bin()).arg("bogus"));
    assert!(!ok);
    assert!(stderr.contains("unrecognized subcommand 'bogus'"), "stderr: {stderr}");
}

#[test]
fn symlink_dispatches_on_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("km-podmaster");
    std::os::unix::fs::symlink(km_bin(), &link).expect("symlink");
    let (ok, stdout, _) = run(Command::new(&link).arg("--help"));
    assert!(ok);
    assert!(stdout.contains("Usage: km podmaster"), "symlink did not reach podmaster: {stdout}");
}
