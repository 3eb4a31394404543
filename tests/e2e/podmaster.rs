//! `km podmaster` against a real etcd: several podmasters on one key, each
//! with its own dest file as if on its own node. Small `--sleep` and
//! `--ttl-secs` keep the suite short; every wait is a poll with a deadline.
//!
//! Deadlines are generous on purpose (the machine may be busy): these tests
//! check what happens and in which order, not how fast. The failover times
//! are printed, and measured by `scripts/measure-podmaster-failover.sh`
//! (figures in `docs/benchmarks.md`). The one bound that is the property
//! itself, a master fencing before its lease could expire, is explained where
//! it is checked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::etcd::Etcd;
use crate::support::km_bin;
use crate::support::process::{Proc, wait_until};

const SLEEP: Duration = Duration::from_millis(250);
const SLEEP_FLAG: &str = "250ms";
const TTL: Duration = Duration::from_secs(3);
const KEY: &str = "scheduler";
const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: scheduler\n";

/// How long anything that should happen within a few `--sleep`s (plus process start-up) may
/// take before a test gives up.
const PATIENCE: Duration = Duration::from_secs(20);

/// One etcd, one source manifest, and podmasters on "nodes" 0..n, each with
/// its own dest directory.
struct Cluster {
    dir: tempfile::TempDir,
    etcd: Etcd,
    source: PathBuf,
    nodes: Vec<Option<Proc>>,
    /// `--ttl-secs` of every podmaster.
    ttl: Duration,
    /// `KM_LOG` of every podmaster.
    log_filter: &'static str,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster::with(n, Etcd::start(), TTL, "info")
    }

    fn with(n: usize, etcd: Etcd, ttl: Duration, log_filter: &'static str) -> Cluster {
        let dir = tempfile::Builder::new().prefix("km-podmaster-").tempdir().expect("tempdir");
        let source = dir.path().join("scheduler.yaml");
        fs::write(&source, MANIFEST).expect("write the source manifest");
        let mut cluster = Cluster { dir, etcd, source, nodes: Vec::new(), ttl, log_filter };
        for i in 0..n {
            fs::create_dir(cluster.node_dir(i)).expect("node dir");
            cluster.nodes.push(None);
            cluster.start(i);
        }
        cluster
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    fn dest(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("scheduler.yaml")
    }

    fn start(&mut self, i: usize) {
        let mut cmd = Command::new(km_bin());
        cmd.arg("podmaster")
            .arg(format!("--etcd-servers={}", self.etcd.client_url()))
            .arg(format!("--key={KEY}"))
            .arg(format!("--whoami=node-{i}"))
            .arg(format!("--source-file={}", self.source.display()))
            .arg(format!("--dest-file={}", self.dest(i).display()))
            .arg(format!("--sleep={SLEEP_FLAG}"))
            .arg(format!("--ttl-secs={}", self.ttl.as_secs()))
            .env("KM_LOG", self.log_filter)
            .env("NO_COLOR", "1");
        let log = self.node_dir(i).join("podmaster.log");
        self.nodes[i] = Some(Proc::spawn(&format!("podmaster node-{i}"), cmd, &log));
    }

    fn proc(&mut self, i: usize) -> &mut Proc {
        self.nodes[i].as_mut().expect("podmaster is running")
    }

    /// The nodes whose dest file exists. Files are checked one after the
    /// other; when two look present, the first is checked again: present at
    /// t1 and t3 around the other's t2 means both really existed at t2 (a
    /// handover in progress between two checks reads as one).
    fn present(&self, among: &[usize]) -> Vec<usize> {
        let found: Vec<usize> = among.iter().copied().filter(|&i| self.dest(i).exists()).collect();
        if found.len() >= 2 && !self.dest(found[0]).exists() {
            return found[1..].to_vec();
        }
        found
    }

    fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }

    /// Waits until exactly one of `among` has its dest file, asserting that
    /// never more than one has; returns it.
    fn wait_for_master(&self, among: &[usize], timeout: Duration) -> usize {
        self.wait_for_new_master(among, among, timeout)
    }

    /// Waits until one of `candidates` has its dest file, asserting that
    /// never more than one of `watch` has; returns it.
    fn wait_for_new_master(
        &self,
        watch: &[usize],
        candidates: &[usize],
        timeout: Duration,
    ) -> usize {
        let among = candidates;
        let mut master = None;
        let ok = wait_until(timeout, || {
            let present = self.present(watch);
            assert!(
                present.len() <= 1,
                "two dest files at once: nodes {present:?}\n{}",
                self.logs()
            );
            master = present.first().copied().filter(|i| candidates.contains(i));
            master.is_some()
        });
        assert!(
            ok,
            "no podmaster among {among:?} copied its manifest within {timeout:?}\n{}",
            self.logs()
        );
        master.unwrap_or_default()
    }

    /// Samples `among` for `duration` and asserts at most one dest file at
    /// every sample; returns the fraction of samples with exactly one.
    fn sample(&self, among: &[usize], duration: Duration) -> f64 {
        let (mut samples, mut ones) = (0u32, 0u32);
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let present = self.present(among);
            assert!(
                present.len() <= 1,
                "two dest files at once: nodes {present:?}\n{}",
                self.logs()
            );
            samples += 1;
            ones += u32::from(present.len() == 1);
            std::thread::sleep(Duration::from_millis(5));
        }
        f64::from(ones) / f64::from(samples.max(1))
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = node.as_ref().map(Proc::log).unwrap_or_else(|| {
                fs::read_to_string(self.node_dir(i).join("podmaster.log")).unwrap_or_default()
            });
            out.push_str(&format!("--- node-{i} ---\n{log}\n"));
        }
        out
    }
}

fn elapsed_ms(since: Instant) -> u128 {
    since.elapsed().as_millis()
}

#[test]
fn three_podmasters_on_one_key_keep_exactly_one_dest_file() {
    let c = Cluster::new(3);
    let master = c.wait_for_master(&c.all(), Duration::from_secs(10));
    let ones = c.sample(&c.all(), Duration::from_secs(4));
    assert!(
        ones >= 0.95,
        "exactly one dest file in only {:.1} % of samples\n{}",
        ones * 100.0,
        c.logs()
    );
    assert_eq!(c.present(&c.all()), [master], "mastership moved without a reason\n{}", c.logs());
    assert_eq!(fs::read_to_string(c.dest(master)).expect("read dest"), MANIFEST);
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).map(|m| m.permissions().mode() & 0o7777).expect("stat")
    };
    assert_eq!(mode(&c.dest(master)), mode(&c.source));
}

/// A master killed with -9 cannot give up its key: a survivor takes over once etcd expires the
/// lease (by design within the TTL plus one `--sleep`; the figure is printed, the deadline is
/// generous), and never while the dead master's dest file could still be taken for valid.
#[test]
fn kill_9_of_the_master_fails_over_once_its_lease_expires() {
    let mut c = Cluster::new(3);
    let master = c.wait_for_master(&c.all(), Duration::from_secs(10));
    let survivors: Vec<usize> = c.all().into_iter().filter(|&i| i != master).collect();

    let killed_at = Instant::now();
    c.proc(master).signal("KILL");
    let next = c.wait_for_master(&survivors, TTL + SLEEP + PATIENCE);
    let failover = killed_at.elapsed();
    eprintln!("kill -9 failover: {} ms (ttl {TTL:?}, sleep {SLEEP:?})", failover.as_millis());
    assert_ne!(next, master);

    // A dead podmaster cannot remove its file; restarted (as the kubelet
    // would), it comes back as a standby and removes it at once.
    assert!(c.dest(master).exists());
    c.proc(master).wait_timeout(Duration::from_secs(5));
    c.start(master);
    assert!(
        wait_until(PATIENCE, || !c.dest(master).exists()),
        "restarted podmaster kept its stale dest\n{}",
        c.logs()
    );
    assert!(c.sample(&c.all(), Duration::from_secs(1)) >= 0.95);
    assert_eq!(c.present(&c.all()), [next]);
}

/// SIGTERM makes the master remove its dest and revoke its lease, so a standby takes over at its
/// next look at the key instead of waiting for the lease to expire. The lease here is far longer
/// than the (generous) deadline, so a handover before the deadline can only come from the
/// revocation; how long it took is printed.
#[test]
fn sigterm_of_the_master_hands_over_without_waiting_for_its_lease() {
    const LONG_TTL: Duration = Duration::from_secs(120);
    let mut c = Cluster::with(3, Etcd::start(), LONG_TTL, "info");
    let master = c.wait_for_master(&c.all(), Duration::from_secs(10));
    let others: Vec<usize> = c.all().into_iter().filter(|&i| i != master).collect();

    let signalled_at = Instant::now();
    c.proc(master).signal("TERM");
    let next = c.wait_for_new_master(&c.all(), &others, PATIENCE);
    let handover = signalled_at.elapsed();
    eprintln!("SIGTERM handover: {} ms (sleep {SLEEP:?})", handover.as_millis());
    assert!(others.contains(&next), "{next} is not one of {others:?}");
    assert!(handover < LONG_TTL, "the deadline must stay below the lease to mean anything");

    let status =
        c.proc(master).wait_timeout(Duration::from_secs(5)).expect("podmaster exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", c.logs());
    assert!(!c.dest(master).exists());
    let log = c.proc(master).log();
    assert!(log.contains("revoked the lease"), "{log}");
}

#[test]
fn sigint_of_a_standby_exits_cleanly_and_leaves_the_master_alone() {
    let mut c = Cluster::new(2);
    let master = c.wait_for_master(&c.all(), Duration::from_secs(10));
    let standby = 1 - master;
    // Signalled once it is running (a process killed by SIGINT before it set up its handlers
    // would say nothing about the podmaster).
    assert!(
        wait_until(Duration::from_secs(10), || c
            .proc(standby)
            .log()
            .contains("joining the election")),
        "the standby never joined the election\n{}",
        c.logs()
    );
    c.proc(standby).signal("INT");
    let status =
        c.proc(standby).wait_timeout(Duration::from_secs(5)).expect("podmaster exits after SIGINT");
    assert!(status.success(), "exit status {status:?}\n{}", c.logs());
    assert!(c.sample(&c.all(), Duration::from_secs(1)) >= 0.99);
    assert_eq!(c.present(&c.all()), [master]);
}

/// With etcd gone, the master must remove its file before its lease could
/// expire in etcd, i.e. before anybody else could take the key: the lease was
/// last renewed at most one renew interval (≤ sleep) before etcd stopped.
/// Returns how long that took.
///
/// This deadline is not a guess at how fast the machine is: it is the safety
/// property itself, a bound in real time that the podmaster promises (it
/// fences at the TTL minus a margin of at least 1 s after its last renewal,
/// see `fence_margin`), and the only way to see a late fence while etcd is
/// down. A passing run shows that dest was gone by then.
fn assert_fences_before_lease_expiry(c: &Cluster, master: usize, stopped_at: Instant) -> Duration {
    let bound = TTL - SLEEP;
    let gone = wait_until(bound, || !c.dest(master).exists());
    let fenced = stopped_at.elapsed();
    assert!(
        gone,
        "master kept its dest for {fenced:?} without etcd (bound {bound:?})\n{}",
        c.logs()
    );
    // Without etcd nobody can become master. A negative check over a quiet second: there is
    // no event that would mark "nobody took over"; it waits for nothing.
    assert_eq!(c.sample(&c.all(), Duration::from_secs(1)), 0.0, "{}", c.logs());
    fenced
}

#[test]
fn master_removes_dest_before_its_lease_could_expire_when_etcd_dies() {
    let mut c = Cluster::new(2);
    let master = c.wait_for_master(&c.all(), Duration::from_secs(10));
    let stopped_at = Instant::now();
    c.etcd.kill();
    let fenced = assert_fences_before_lease_expiry(&c, master, stopped_at);
    eprintln!("fenced {} ms after etcd stopped (ttl {TTL:?}, sleep {SLEEP:?})", fenced.as_millis());

    // etcd comes back with the old lease still on record (etcd even extends
    // leases on restart); the fenced master revokes it and one podmaster
    // becomes master again.
    c.etcd.start_again();
    let back = Instant::now();
    c.wait_for_master(&c.all(), TTL + Duration::from_secs(5));
    eprintln!("master again {} ms after etcd restarted", elapsed_ms(back));
    assert!(c.sample(&c.all(), Duration::from_secs(1)) >= 0.95);
    let log = c.proc(master).log();
    assert_eq!(log.matches("etcd unreachable").count(), 1, "logged more than once:\n{log}");
    assert_eq!(log.matches("etcd reachable again").count(), 1, "{log}");
}

#[test]
fn master_removes_dest_before_its_lease_could_expire_when_etcd_hangs() {
    let c = Cluster::new(2);
    let master = c.wait_for_master(&c.all(), Duration::from_secs(10));
    let frozen_at = Instant::now();
    c.etcd.freeze();
    let fenced = assert_fences_before_lease_expiry(&c, master, frozen_at);
    eprintln!("fenced {} ms after etcd stopped (ttl {TTL:?}, sleep {SLEEP:?})", fenced.as_millis());
    c.etcd.thaw();
    c.wait_for_master(&c.all(), TTL + Duration::from_secs(5));
    assert!(c.sample(&c.all(), Duration::from_secs(1)) >= 0.95);
}

#[test]
fn source_edits_propagate_to_the_masters_dest() {
    let c = Cluster::new(2);
    let master = c.wait_for_master(&c.all(), Duration::from_secs(10));
    let edited = format!("{MANIFEST}  labels:\n    edited: \"true\"\n");
    fs::write(&c.source, &edited).expect("edit the source");
    let updated =
        wait_until(PATIENCE, || fs::read_to_string(c.dest(master)).is_ok_and(|s| s == edited));
    assert!(updated, "dest not updated after a source edit\n{}", c.logs());
    assert_eq!(c.present(&c.all()), [master]);
    // The kubelet never sees a temporary file: it would be hidden anyway.
    let names: Vec<String> = fs::read_dir(c.node_dir(master))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".log"))
        .collect();
    assert_eq!(names, ["scheduler.yaml"]);
}

#[test]
fn unreachable_etcd_is_logged_once_and_retried_until_it_appears() {
    let etcd = Etcd::unstarted();
    // Each failed exchange is noted at debug level: the rounds of retrying can be counted.
    let mut c = Cluster::with(1, etcd, TTL, "info,km_podmaster=debug");
    assert!(
        wait_until(Duration::from_secs(10), || c.proc(0).log().contains("etcd unreachable")),
        "{}",
        c.logs()
    );
    // Several rounds of retrying, then etcd appears.
    let rounds = |c: &Cluster| {
        c.nodes[0].as_ref().map_or(0, |p| p.log().matches("exchange with etcd failed").count())
    };
    assert!(wait_until(PATIENCE, || rounds(&c) >= 5), "no rounds of retrying\n{}", c.logs());
    assert!(!c.dest(0).exists());
    c.etcd.start_again();
    c.wait_for_master(&[0], Duration::from_secs(10));
    let log = c.proc(0).log();
    assert_eq!(log.matches("etcd unreachable").count(), 1, "logged more than once:\n{log}");
    assert_eq!(log.matches("etcd reachable again").count(), 1, "{log}");
    assert_eq!(log.matches("became master").count(), 1, "{log}");

    c.proc(0).signal("INT");
    let status = c.proc(0).wait_timeout(Duration::from_secs(5)).expect("exits after SIGINT");
    assert!(status.success());
    assert!(!c.dest(0).exists());
}

/// Runs `km podmaster` with `args` and expects it to fail at start-up;
/// returns its stderr.
fn start_up_error(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(km_bin());
    cmd.arg("podmaster").args(args).env("NO_COLOR", "1");
    let log = dir.path().join("log");
    let mut proc = Proc::spawn("podmaster", cmd, &log);
    let status =
        proc.wait_timeout(Duration::from_secs(10)).expect("podmaster exits on a bad configuration");
    assert!(!status.success(), "podmaster accepted {args:?}");
    proc.log()
}

#[test]
fn start_up_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("scheduler.yaml");
    fs::write(&source, MANIFEST).expect("write");
    let source = source.display().to_string();
    let dest = dir.path().join("dest.yaml").display().to_string();
    let missing = dir.path().join("missing.yaml").display().to_string();
    let no_dir = dir.path().join("no/such/dir/dest.yaml").display().to_string();
    let base = |etcd: &str, src: &str, dst: &str| {
        vec![
            format!("--etcd-servers={etcd}"),
            "--key=k".to_owned(),
            format!("--source-file={src}"),
            format!("--dest-file={dst}"),
        ]
    };
    let run =
        |args: Vec<String>| start_up_error(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let err = run(base("http://127.0.0.1:2379", &missing, &dest));
    assert!(err.contains(&format!("source file {missing}")), "{err}");

    let err = run(base("http://127.0.0.1:2379", &source, &no_dir));
    assert!(
        err.contains("dest directory")
            && err.contains("no/such/dir")
            && err.contains("not writable"),
        "{err}"
    );

    let err = run(base("ftp://etcd:2379", &source, &dest));
    assert!(err.contains("invalid etcd URL \"ftp://etcd:2379\""), "{err}");

    let err = run(base("http://127.0.0.1:2379,etcd-2", &source, &dest));
    assert!(err.contains("invalid etcd URL \"etcd-2\": missing :port"), "{err}");

    let mut args = base("http://127.0.0.1:2379", &source, &dest);
    args.push("--sleep=soon".to_owned());
    let err = run(args);
    assert!(err.contains("--sleep"), "{err}");
    assert!(!Path::new(&dest).exists());
}
