//! Unit tests of flag parsing and start-up validation.

use std::fs;

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
    Cli::try_parse_from(std::iter::once("podmaster").chain(argv.iter().copied())).map(|c| c.args)
}

/// A source file and a dest path in temporary directories.
struct Files {
    _dir: tempfile::TempDir,
    source: String,
    dest: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("scheduler.yaml");
    fs::write(&source, "kind: Pod\n").expect("write");
    fs::create_dir(dir.path().join("manifests")).expect("mkdir");
    let dest = dir.path().join("manifests/scheduler.yaml");
    Files { source: source.display().to_string(), dest: dest.display().to_string(), _dir: dir }
}

fn args(f: &Files, extra: &[&str]) -> Args {
    let mut argv = vec![
        "--etcd-servers=http://127.0.0.1:2379",
        "--key=scheduler",
        "--source-file",
        &f.source,
        "--dest-file",
        &f.dest,
    ];
    argv.extend_from_slice(extra);
    parse(&argv).expect("flags parse")
}

#[test]
fn defaults_are_those_of_the_original() {
    let f = files();
    let a = args(&f, &[]);
    assert_eq!(a.sleep, Duration::from_secs(5));
    assert_eq!(a.ttl_secs, 30);
    let c = Config::from_args(a).expect("valid");
    assert_eq!(c.timing, Timing { sleep: Duration::from_secs(5), ttl: Duration::from_secs(30) });
    assert!(!c.whoami.is_empty(), "whoami defaults to the host name");
    assert!(c.tls.is_none());
}

#[test]
fn required_flags_are_required() {
    for missing in ["--etcd-servers", "--key", "--source-file", "--dest-file"] {
        let mut argv = vec!["--etcd-servers=a:1", "--key=k", "--source-file=s", "--dest-file=d"];
        argv.retain(|a| !a.starts_with(missing));
        let err = parse(&argv).expect_err("must fail");
        assert!(err.to_string().contains(missing), "{missing}: {err}");
    }
}

#[test]
fn sleep_accepts_the_original_forms() {
    assert_eq!(parse_sleep("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_sleep("5"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_sleep("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_sleep("1m30s"), Ok(Duration::from_secs(90)));
    assert!(parse_sleep("0").is_err());
    assert!(parse_sleep("0s").is_err());
    assert!(parse_sleep("fast").is_err());
    assert!(parse_sleep("").is_err());
    assert!(parse_sleep("-1s").is_err());
}

#[test]
fn sleep_and_ttl_flags_parse() {
    let f = files();
    let a = args(&f, &["--sleep=250ms", "--ttl-secs", "3", "--whoami=node-a"]);
    assert_eq!(a.sleep, Duration::from_millis(250));
    assert_eq!(a.ttl_secs, 3);
    assert!(
        parse(&[
            "--etcd-servers=a:1",
            "--key=k",
            "--source-file=s",
            "--dest-file=d",
            "--ttl-secs=3s"
        ])
        .is_err()
    );
    let c = Config::from_args(a).expect("valid");
    assert_eq!(c.whoami, "node-a");
}

#[test]
fn ttl_below_two_seconds_is_rejected() {
    let f = files();
    let err = Config::from_args(args(&f, &["--ttl-secs=1"])).expect_err("must fail");
    assert_eq!(err.to_string(), "--ttl-secs must be at least 2, got 1");
}

#[test]
fn endpoints_are_normalised() {
    let list = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        parse_endpoints(
            &list(&["http://127.0.0.1:2379", "etcd-1.example:4001", "[::1]:2379/"]),
            false
        )
        .expect("ok"),
        ["http://127.0.0.1:2379", "http://etcd-1.example:4001", "http://[::1]:2379"]
    );
    assert_eq!(
        parse_endpoints(&list(&["10.0.0.1:2379"]), true).expect("ok"),
        ["https://10.0.0.1:2379"]
    );
    assert_eq!(
        parse_endpoints(&list(&["https://10.0.0.1:2379"]), true).expect("ok"),
        ["https://10.0.0.1:2379"]
    );
}

#[test]
fn bad_endpoints_are_named_in_the_error() {
    let list = |s: &str| vec![s.to_string()];
    for (url, reason) in [
        ("ftp://h:1", "unsupported scheme"),
        ("http://h", "missing :port"),
        ("http://h:0", "invalid port"),
        ("http://h:99999", "invalid port"),
        ("http://:2379", "invalid host"),
        ("http://h:1/v2/keys", "without path"),
        ("http://bad host:1", "invalid host"),
    ] {
        let err = parse_endpoints(&list(url), false).expect_err(url).to_string();
        assert!(err.contains(&format!("{url:?}")) && err.contains(reason), "{url}: {err}");
    }
    let err = parse_endpoints(&list("http://h:1"), true).expect_err("http with tls").to_string();
    assert!(err.contains("use https://"), "{err}");
    assert!(matches!(parse_endpoints(&list(""), false), Err(ConfigError::NoEtcdServers)));
}

#[test]
fn missing_source_file_names_the_path() {
    let f = files();
    let missing = format!("{}.missing", f.source);
    let mut a = args(&f, &[]);
    a.source_file = missing.clone().into();
    let err = Config::from_args(a).expect_err("must fail").to_string();
    assert!(err.starts_with(&format!("source file {missing}: ")), "{err}");
}

#[test]
fn a_directory_is_not_a_source_file() {
    let f = files();
    let mut a = args(&f, &[]);
    a.source_file = std::env::temp_dir();
    assert!(matches!(Config::from_args(a), Err(ConfigError::SourceNotAFile { .. })));
}

#[test]
fn dest_in_a_missing_directory_is_not_writable() {
    let f = files();
    let mut a = args(&f, &[]);
    let dest = Path::new(&f.dest).with_file_name("nope").join("scheduler.yaml");
    a.dest_file = dest.clone();
    let err = Config::from_args(a).expect_err("must fail").to_string();
    let dir = dest.parent().map(|d| d.display().to_string()).unwrap_or_default();
    assert!(err.starts_with(&format!("dest directory {dir} is not writable")), "{err}");
}

#[test]
fn dest_must_not_be_a_directory() {
    let f = files();
    let mut a = args(&f, &[]);
    a.dest_file = Path::new(&f.dest).parent().map(Path::to_path_buf).unwrap_or_default();
    assert!(matches!(Config::from_args(a), Err(ConfigError::DestIsADirectory { .. })));
}

#[test]
fn tls_flags_need_a_ca_and_a_complete_identity() {
    let f = files();
    let err = Config::from_args(args(&f, &["--etcd-certfile=/c.pem"])).expect_err("must fail");
    assert!(matches!(err, ConfigError::TlsIdentityIncomplete), "{err}");
    let err = Config::from_args(args(&f, &["--etcd-certfile=/c.pem", "--etcd-keyfile=/k.pem"]))
        .expect_err("x");
    assert!(matches!(err, ConfigError::TlsFile { flag: "--etcd-certfile", .. }), "{err}");

    let mut a = args(&f, &[]);
    a.etcd_servers = vec!["https://127.0.0.1:2379".into()];
    assert!(matches!(Config::from_args(a), Err(ConfigError::TlsWithoutCa)));
}

#[test]
fn tls_flags_switch_endpoints_to_https() {
    let f = files();
    // Contents are checked when connecting, not here.
    let mut a = args(&f, &[]);
    a.etcd_servers = vec!["127.0.0.1:2379".into()];
    a.etcd_cafile = Some(f.source.clone().into());
    let c = Config::from_args(a).expect("valid");
    assert_eq!(c.endpoints, ["https://127.0.0.1:2379"]);
    assert!(c.tls.is_some());

    let err = Config::from_args(args(&f, &[&format!("--etcd-cafile={}", f.source)]))
        .expect_err("http + tls");
    assert!(matches!(err, ConfigError::EtcdUrl { .. }), "{err}");
}

#[test]
fn request_timeout_is_one_sleep_but_at_least_a_second() {
    let f = files();
    let c = Config::from_args(args(&f, &["--sleep=200ms"])).expect("valid");
    assert_eq!(c.request_timeout(), Duration::from_secs(1));
    let c = Config::from_args(args(&f, &[])).expect("valid");
    assert_eq!(c.request_timeout(), Duration::from_secs(5));
}
