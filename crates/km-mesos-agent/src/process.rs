//! Processes: starting a command in its sandbox in a process group of its
//! own, and signalling whole process groups (no `unsafe`: std's
//! `process_group` and nix's safe `killpg`).

use std::path::Path;
use std::process::Stdio;

use km_mesos::v1::CommandInfo;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// Starts `command` (`/bin/sh -c value` when `shell`, the default; else
/// `value` as the program and `arguments` as the whole argv) in `sandbox`,
/// with `env` added to the agent's environment, stdout/stderr appended to
/// the sandbox's `stdout` / `stderr` files, as leader of a new process group.
pub fn spawn(
    command: &CommandInfo,
    env: &[(String, String)],
    sandbox: &Path,
) -> std::io::Result<tokio::process::Child> {
    let value = command.value.clone().unwrap_or_default();
    let mut cmd = if command.shell.unwrap_or(true) {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(&value);
        c
    } else {
        if value.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "CommandInfo.value is empty",
            ));
        }
        let mut c = tokio::process::Command::new(&value);
        if let Some((argv0, rest)) = command.arguments.split_first() {
            c.arg0(argv0).args(rest);
        }
        c
    };
    let open =
        |name: &str| std::fs::OpenOptions::new().create(true).append(true).open(sandbox.join(name));
    cmd.current_dir(sandbox)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(open("stdout")?)
        .stderr(open("stderr")?)
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
}

/// Sends `sig` to the process group led by `pid`; a group that is already
/// gone is not an error.
pub fn signal_group(pid: i32, sig: Signal) {
    if pid <= 0 {
        return;
    }
    if let Err(e) = signal::killpg(Pid::from_raw(pid), sig)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pid, ?sig, "killpg failed: {e}");
    }
}

/// Whether a process (or zombie) with this pid exists.
pub fn alive(pid: i32) -> bool {
    pid > 0 && signal::kill(Pid::from_raw(pid), None).is_ok()
}

/// Describes a wait status as Mesos does in task messages.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("Command exited with status {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| sig.to_string());
            format!("Command terminated with signal {name}")
        }
        _ => "Command terminated".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_in_the_sandbox_with_its_env_and_own_group() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = CommandInfo {
            value: Some("echo $FOO; pwd; echo err >&2; exit 3".into()),
            ..Default::default()
        };
        let mut child = spawn(&cmd, &[("FOO".into(), "bar".into())], dir.path()).unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(describe_exit(status), "Command exited with status 3");
        let out = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        let canon = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("bar\n{}\n", canon.display()));
        assert_eq!(std::fs::read_to_string(dir.path().join("stderr")).unwrap(), "err\n");
    }

    #[tokio::test]
    async fn argv_form_and_group_kill() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = CommandInfo {
            shell: Some(false),
            value: Some("/bin/sleep".into()),
            arguments: vec!["sleep".into(), "60".into()],
            ..Default::default()
        };
        let mut child = spawn(&cmd, &[], dir.path()).unwrap();
        let pid = child.id().unwrap() as i32;
        assert!(alive(pid));
        signal_group(pid, Signal::SIGTERM);
        let status = child.wait().await.unwrap();
        assert_eq!(describe_exit(status), "Command terminated with signal SIGTERM");
        assert!(!alive(pid));
        signal_group(pid, Signal::SIGKILL);
    }
}
