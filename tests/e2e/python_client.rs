//! A client from outside Rust: the official Python Kubernetes client (Debian's
//! python3-kubernetes) runs tests/python/client.py against `km apiserver` on a real etcd —
//! create, list with label selectors, watch while patching (strategic merge and JSON merge),
//! scale, a 404, delete.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::apiserver::ApiServer;
use crate::support::etcd::Etcd;
use crate::support::process::Proc;

/// The steps tests/python/client.py prints, in order.
const STEPS: &[&str] = &[
    "create-namespace",
    "create-configmap",
    "create-deployment",
    "list-with-selectors",
    "watch-started",
    "patch-strategic-merge",
    "patch-json-merge",
    "watch-saw-modified",
    "scale-deployment",
    "patch-deployment-json-patch",
    "missing-is-404",
    "delete",
];

/// A python3 that can import the `kubernetes` package: Debian's own first (where the
/// package installs), then the first on PATH (which may be another Python, e.g. pyenv's).
fn python_with_kubernetes() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("python3")).find(|f| f.is_file()));
    [Some(PathBuf::from("/usr/bin/python3")), on_path].into_iter().flatten().find(|py| {
        py.is_file()
            && Command::new(py)
                .args(["-c", "import kubernetes"])
                .output()
                .is_ok_and(|out| out.status.success())
    })
}

#[test]
fn python_client_creates_lists_watches_and_patches() {
    let python = python_with_kubernetes().unwrap_or_else(|| {
        panic!(
            "no python3 can import the `kubernetes` package: this test needs Debian's \
             python3-kubernetes (run scripts/install-deps.sh)"
        )
    });
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/client.py");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg(server.url());
    let mut client = Proc::spawn("python client", cmd, &dir.path().join("client.log"));
    // The script bounds each request and its watch; this bounds the whole run.
    let status = client.wait_timeout(Duration::from_secs(180));
    let out = client.log();
    let failure = |why: &str| {
        format!(
            "{why} ({} {})\n--- its output:\n{out}\n--- apiserver log:\n{}",
            python.display(),
            script.display(),
            server.proc.log()
        )
    };
    let status =
        status.unwrap_or_else(|| panic!("{}", failure("client.py did not finish in 180s")));
    assert!(status.success(), "{}", failure(&format!("client.py failed: {status}")));
    for step in STEPS {
        assert!(
            out.contains(&format!("step {step}: ok")),
            "{}",
            failure(&format!("client.py did not report the step {step}"))
        );
    }
    assert!(out.contains("all steps passed"), "{}", failure("client.py did not finish its steps"));
}
