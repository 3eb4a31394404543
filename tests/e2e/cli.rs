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

/// Cloud-provider flags are used or refused, never accepted and ignored: an unknown provider, a
/// config without a provider and a config with an unknown key stop km apiserver and km
/// controller-manager at start-up with the reason.
#[test]
fn cloud_provider_flags_are_checked_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_key = dir.path().join("mesos-cloud.conf");
    std::fs::write(&bad_key, "[mesos-cloud]\nmesos-master = 127.0.0.1:5050\nzone = a\n")
        .expect("write");
    let cases: [(&[String], &str); 3] = [
        (&["--cloud-provider=aws".to_owned()], "aws"),
        (&[format!("--cloud-config={}", bad_key.display())], "cloud-provider"),
        (
            &["--cloud-provider=mesos".to_owned(), format!("--cloud-config={}", bad_key.display())],
            "zone",
        ),
    ];
    for (flags, needle) in cases {
        for sub in [
            vec![
                "apiserver".to_owned(),
                "--etcd-servers=http://127.0.0.1:1".to_owned(),
                "--insecure-port=0".to_owned(),
            ],
            vec![
                "controller-manager".to_owned(),
                "--master=http://127.0.0.1:1".to_owned(),
                "--port=0".to_owned(),
            ],
        ] {
            let (ok, _, stderr) = run(Command::new(km_bin()).args(&sub).args(flags));
            assert!(!ok, "{sub:?} {flags:?} started");
            assert!(stderr.contains(needle), "{sub:?} {flags:?}: {stderr}");
        }
    }
}

/// A period of zero would make a timer that never waits (tokio refuses it with a panic):
/// km controller-manager refuses it at start-up with the flag's name.
#[test]
fn a_zero_resync_period_is_refused_at_start_up() {
    let (ok, _, stderr) = run(Command::new(km_bin()).args([
        "controller-manager",
        "--master=http://127.0.0.1:1",
        "--port=0",
        "--min-resync-period=0s",
    ]));
    assert!(!ok, "started with a zero resync period");
    assert!(stderr.contains("--min-resync-period"), "{stderr}");
}
