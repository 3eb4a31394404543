//! `kubectl exec` on the executor: `/exec/{namespace}/{pod}/{container}`, the kubelet's path,
//! which the API server proxies `pods/exec` to without looking inside.
//!
//! The client upgrades the HTTP connection to one of the two transports of Kubernetes'
//! remote-command protocol, and the executor serves both:
//! - WebSocket with subprotocol `v5.channel.k8s.io` or `v4.channel.k8s.io` (kubectl 1.30 and
//!   later): each binary message starts with its channel number (0 stdin, 1 stdout, 2 stderr,
//!   3 error, 4 resize); v5 adds channel 255, whose message `[255, c]` closes channel `c`.
//! - SPDY/3.1 with `X-Stream-Protocol-Version: v4.channel.k8s.io` (older kubectl, and what an
//!   API server that translates WebSocket for its nodes sends): the client opens one SPDY
//!   stream per channel, named by its `streamtype` header.
//!
//! Either way the command's exit is reported on the error channel as a `v1.Status`: `Success`,
//! or `Failure` with reason `NonZeroExitCode` and the code as an `ExitCode` cause, which kubectl
//! turns into its own exit code.

mod spdy;
mod ws;

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use km_runtime::manager::PodManager;
use km_runtime::runtime::{ExecOutput, ExecRequest};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

pub(crate) use spdy::Spdy;
pub(crate) use ws::WebSocket;

/// What the query of an exec request asks for, as the kubelet names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExecQuery {
    pub(crate) command: Vec<String>,
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
}

impl ExecQuery {
    /// Parses the query string (`command` repeats, one argument each).
    pub(crate) fn parse(query: &str) -> Result<ExecQuery, String> {
        let mut q = ExecQuery {
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let flag = || match v.as_ref() {
                "" | "0" | "false" => Ok(false),
                "1" | "true" => Ok(true),
                other => Err(format!("{k}: {other:?} is not a boolean")),
            };
            match k.as_ref() {
                "command" => q.command.push(v.into_owned()),
                "stdin" | "input" => q.stdin = flag()?,
                "stdout" | "output" => q.stdout = flag()?,
                "stderr" | "error" => q.stderr = flag()?,
                "tty" => q.tty = flag()?,
                // The container is in the path; the API server may pass it on.
                "container" => {}
                other => return Err(format!("unknown exec parameter {other:?}")),
            }
        }
        if q.command.is_empty() {
            return Err("exec needs a command (the command parameter)".into());
        }
        if !(q.stdin || q.stdout || q.stderr) {
            return Err("exec needs at least one of stdin, stdout and stderr".into());
        }
        if q.tty && q.stderr {
            // With a terminal everything goes to stdout, as kubectl asks.
            q.stderr = false;
        }
        Ok(q)
    }

    pub(crate) fn request(&self) -> ExecRequest {
        ExecRequest { command: self.command.clone(), stdin: self.stdin, tty: self.tty }
    }
}

/// What the client sends besides stdin data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    Stdin(Bytes),
    /// The client has no more input: the command's stdin is closed.
    StdinClosed,
}

/// The command to run and where: what a transport hands to [`run`].
pub(crate) struct Target {
    pub(crate) manager: Arc<PodManager>,
    pub(crate) uid: String,
    pub(crate) container: String,
    pub(crate) query: ExecQuery,
}

/// Runs the command: feeds `input` to its stdin and its output to `output`. Returns the
/// `v1.Status` for the error channel, or `None` when the client went away first (the command
/// is then killed).
pub(crate) async fn run(
    target: Target,
    mut input: mpsc::Receiver<Input>,
    output: mpsc::Sender<ExecOutput>,
) -> Option<Value> {
    let session =
        match target.manager.exec(&target.uid, &target.container, &target.query.request()).await {
            Ok(s) => s,
            Err(e) => return Some(internal_error(&e.to_string())),
        };
    let (mut stdin, mut out, exit) = (session.stdin, session.output, session.exit);
    // Client input until it goes away: that ends the session, whatever the command does.
    let feed = async {
        while let Some(item) = input.recv().await {
            match item {
                Input::Stdin(data) => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&data).await.is_err()
                    {
                        // The command closed its stdin; what else comes is dropped.
                        stdin = None;
                    }
                }
                Input::StdinClosed => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
            }
        }
    };
    let pump = async {
        while let Some(item) = out.next().await {
            match item {
                Ok(chunk) => {
                    if output.send(chunk).await.is_err() {
                        return Err(None);
                    }
                }
                Err(e) => return Err(Some(internal_error(&e.to_string()))),
            }
        }
        Ok(())
    };
    tokio::select! {
        () = feed => {
            tracing::debug!(container = %target.container, "the exec client went away; the command is killed");
            None
        }
        pumped = pump => match pumped {
            Err(status) => status,
            Ok(()) => Some(match exit.await {
                Ok(code) => exit_status(code),
                Err(e) => internal_error(&e.to_string()),
            }),
        },
    }
}

/// The error-channel status for an exit code.
pub(crate) fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" });
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
    })
}

/// The error-channel status for a command that could not run.
pub(crate) fn internal_error(message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("error executing command in container: {message}"),
        "reason": "InternalError",
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_parsed_as_kubectl_sends_them() {
        let q = ExecQuery::parse("command=sh&command=-c&command=echo+hi%3B+exit+3&container=c&stdin=true&stdout=true&stderr=true&tty=false")
            .expect("parse");
        assert_eq!(q.command, ["sh", "-c", "echo hi; exit 3"]);
        assert!(q.stdin && q.stdout && q.stderr && !q.tty);
        let t = ExecQuery::parse("command=sh&stdout=1&stderr=1&tty=1").expect("tty");
        assert!(t.tty && !t.stderr, "a terminal carries stderr on stdout");
        assert!(ExecQuery::parse("stdout=true").expect_err("no command").contains("command"));
        assert!(ExecQuery::parse("command=ls").expect_err("no streams").contains("stdout"));
        assert!(ExecQuery::parse("command=ls&stdout=maybe").expect_err("bool").contains("stdout"));
        assert!(
            ExecQuery::parse("command=ls&stdout=1&bogus=1").expect_err("unknown").contains("bogus")
        );
    }

    #[test]
    fn exit_codes_become_the_statuses_kubectl_reads() {
        assert_eq!(exit_status(0)["status"], "Success");
        let failed = exit_status(3);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], json!({ "reason": "ExitCode", "message": "3" }));
        let broken = internal_error("no such container");
        assert_eq!(broken["reason"], "InternalError");
        assert!(broken["message"].as_str().is_some_and(|m| m.contains("no such container")));
    }
}
