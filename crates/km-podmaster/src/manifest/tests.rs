//! Unit tests of the dest-file operations, in temporary directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).expect("stat")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn copies_when_missing_with_the_source_mode_and_leaves_no_temp_file() {
    let src_dir = tempfile::tempdir().expect("tempdir");
    let dst_dir = tempfile::tempdir().expect("tempdir");
    let source = src_dir.path().join("scheduler.yaml");
    let dest = dst_dir.path().join("scheduler.yaml");
    fs::write(&source, "kind: Pod\n").expect("write");
    fs::set_permissions(&source, fs::Permissions::from_mode(0o640)).expect("chmod");

    assert_eq!(sync(&source, &dest).expect("sync"), Synced::Written);
    assert_eq!(fs::read_to_string(&dest).expect("read"), "kind: Pod\n");
    assert_eq!(mode(&dest), 0o640);
    assert_eq!(entries(dst_dir.path()), ["scheduler.yaml"]);
}

#[test]
fn rewrites_only_when_content_or_mode_differs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("src.yaml");
    let dest = dir.path().join("dest.yaml");
    fs::write(&source, "a").expect("write");

    assert_eq!(sync(&source, &dest).expect("sync"), Synced::Written);
    assert_eq!(sync(&source, &dest).expect("sync"), Synced::Unchanged);

    fs::write(&source, "b").expect("write");
    assert_eq!(sync(&source, &dest).expect("sync"), Synced::Written);
    assert_eq!(fs::read_to_string(&dest).expect("read"), "b");

    fs::set_permissions(&source, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(sync(&source, &dest).expect("sync"), Synced::Written);
    assert_eq!(mode(&dest), 0o600);

    fs::write(&dest, "tampered").expect("write");
    assert_eq!(sync(&source, &dest).expect("sync"), Synced::Written);
    assert_eq!(fs::read_to_string(&dest).expect("read"), "b");
}

#[test]
fn missing_source_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("nope.yaml");
    let err = sync(&source, &dir.path().join("dest.yaml")).expect_err("must fail");
    assert!(err.to_string().contains("nope.yaml"), "{err}");
    assert!(!dir.path().join("dest.yaml").exists());
}

#[test]
fn remove_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("dest.yaml");
    fs::write(&dest, "x").expect("write");
    assert!(remove(&dest).expect("remove"));
    assert!(!remove(&dest).expect("remove"));
}

#[test]
fn probe_fails_for_a_missing_dest_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(probe_dest_dir(&dir.path().join("missing/dest.yaml")).is_err());
    probe_dest_dir(&dir.path().join("dest.yaml")).expect("writable dir");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn dest_dir_of_a_bare_name_is_the_working_directory() {
    assert_eq!(dest_dir(Path::new("dest.yaml")), Path::new("."));
    assert_eq!(
        dest_dir(Path::new("/etc/kubernetes/manifests/x.yaml")),
        Path::new("/etc/kubernetes/manifests")
    );
}
