//! The environment the agent gives an executor (as Mesos's
//! `executorEnvironment` builds it: the `MESOS_*` variables the v1 executor
//! API documents). It must be exactly what
//! [`km_mesos::executor::ExecutorEnv::from_lookup`] parses.

use std::path::Path;
use std::time::Duration;

use km_mesos::duration;
use km_mesos::v1::{CommandInfo, ExecutorInfo};

/// Agent-wide inputs to the executor environment.
#[derive(Debug, Clone)]
pub struct AgentEnvParams<'a> {
    /// `--ip`.
    pub ip: &'a str,
    /// `--port`.
    pub port: u16,
    /// The agent id from the master.
    pub agent_id: &'a str,
    /// `--executor_shutdown_grace_period`.
    pub shutdown_grace_period: Duration,
    /// `--recovery_timeout`.
    pub recovery_timeout: Duration,
    /// `--executor_reregistration_timeout`.
    pub executor_reregistration_timeout: Duration,
}

/// The grace period for an executor: its own `shutdown_grace_period`, else the flag.
pub fn shutdown_grace_period(info: &ExecutorInfo, flag: Duration) -> Duration {
    info.shutdown_grace_period
        .as_ref()
        .map(|d| Duration::from_nanos(u64::try_from(d.nanoseconds).unwrap_or(0)))
        .unwrap_or(flag)
}

/// Builds the environment, in order; later entries win (the executor's own
/// `CommandInfo.environment` comes last).
pub fn executor_env(
    agent: &AgentEnvParams<'_>,
    framework_id: &str,
    checkpoint: bool,
    info: &ExecutorInfo,
    directory: &Path,
) -> Vec<(String, String)> {
    let endpoint = format!("{}:{}", agent.ip, agent.port);
    let dir = directory.display().to_string();
    let mut env = vec![
        ("MESOS_FRAMEWORK_ID".to_owned(), framework_id.to_owned()),
        ("MESOS_EXECUTOR_ID".to_owned(), info.executor_id.value.clone()),
        ("MESOS_DIRECTORY".to_owned(), dir.clone()),
        ("MESOS_SANDBOX".to_owned(), dir),
        ("MESOS_AGENT_ENDPOINT".to_owned(), endpoint.clone()),
        ("MESOS_SLAVE_ID".to_owned(), agent.agent_id.to_owned()),
        ("MESOS_SLAVE_PID".to_owned(), format!("slave(1)@{endpoint}")),
        ("MESOS_CHECKPOINT".to_owned(), if checkpoint { "1" } else { "0" }.to_owned()),
        ("MESOS_HTTP_COMMAND_EXECUTOR".to_owned(), "0".to_owned()),
        (
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".to_owned(),
            duration::format(shutdown_grace_period(info, agent.shutdown_grace_period)),
        ),
    ];
    if checkpoint {
        env.push(("MESOS_RECOVERY_TIMEOUT".to_owned(), duration::format(agent.recovery_timeout)));
        env.push((
            "MESOS_SUBSCRIPTION_BACKOFF_MAX".to_owned(),
            duration::format(agent.executor_reregistration_timeout),
        ));
    }
    env.push(("LIBPROCESS_PORT".to_owned(), "0".to_owned()));
    if let Some(command) = &info.command {
        env.extend(command_env(command));
    }
    env
}

/// `CommandInfo.environment` as name/value pairs (secrets are not supported
/// and are skipped).
pub fn command_env(command: &CommandInfo) -> Vec<(String, String)> {
    command
        .environment
        .iter()
        .flat_map(|e| &e.variables)
        .filter(|v| v.secret.is_none())
        .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use km_mesos::executor::ExecutorEnv;
    use km_mesos::v1::{DurationInfo, Environment, ExecutorId, environment};
    use std::collections::HashMap;

    fn params() -> AgentEnvParams<'static> {
        AgentEnvParams {
            ip: "127.0.0.1",
            port: 5051,
            agent_id: "m-S0",
            shutdown_grace_period: Duration::from_secs(5),
            recovery_timeout: Duration::from_secs(900),
            executor_reregistration_timeout: Duration::from_secs(2),
        }
    }

    fn info() -> ExecutorInfo {
        ExecutorInfo { executor_id: ExecutorId { value: "ex1".into() }, ..ExecutorInfo::default() }
    }

    fn as_map(env: &[(String, String)]) -> HashMap<String, String> {
        env.iter().cloned().collect()
    }

    #[test]
    fn checkpointing_executor_gets_recovery_variables() {
        let env = executor_env(&params(), "fw-0000", true, &info(), Path::new("/w/sandbox"));
        let m = as_map(&env);
        assert_eq!(m["MESOS_CHECKPOINT"], "1");
        assert_eq!(m["MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"], "5secs");
        assert_eq!(m["MESOS_RECOVERY_TIMEOUT"], "15mins");
        assert_eq!(m["MESOS_SUBSCRIPTION_BACKOFF_MAX"], "2secs");
        assert_eq!(m["MESOS_AGENT_ENDPOINT"], "127.0.0.1:5051");
        assert_eq!(m["MESOS_SLAVE_PID"], "slave(1)@127.0.0.1:5051");
        assert_eq!(m["MESOS_HTTP_COMMAND_EXECUTOR"], "0");
        assert_eq!(m["LIBPROCESS_PORT"], "0");
        let parsed = ExecutorEnv::from_lookup(|k| m.get(k).cloned()).unwrap();
        assert!(parsed.checkpoint);
        assert_eq!(parsed.framework_id.value, "fw-0000");
        assert_eq!(parsed.executor_id.value, "ex1");
        assert_eq!(parsed.directory, Path::new("/w/sandbox"));
        assert_eq!(parsed.sandbox, Path::new("/w/sandbox"));
        assert_eq!(parsed.agent_id.as_deref(), Some("m-S0"));
        assert_eq!(parsed.recovery_timeout, Duration::from_secs(900));
        assert_eq!(parsed.subscription_backoff_max, Duration::from_secs(2));
    }

    #[test]
    fn non_checkpointing_executor_lacks_them() {
        let env = executor_env(&params(), "fw", false, &info(), Path::new("/s"));
        let m = as_map(&env);
        assert_eq!(m["MESOS_CHECKPOINT"], "0");
        assert!(!m.contains_key("MESOS_RECOVERY_TIMEOUT"));
        assert!(!m.contains_key("MESOS_SUBSCRIPTION_BACKOFF_MAX"));
        assert!(!ExecutorEnv::from_lookup(|k| m.get(k).cloned()).unwrap().checkpoint);
    }

    #[test]
    fn executor_grace_period_and_environment_win() {
        let mut info = info();
        info.shutdown_grace_period = Some(DurationInfo { nanoseconds: 250_000_000 });
        let var = |n: &str, v: &str| environment::Variable {
            name: n.into(),
            value: Some(v.into()),
            ..Default::default()
        };
        info.command = Some(CommandInfo {
            environment: Some(Environment {
                variables: vec![var("FOO", "bar"), var("LIBPROCESS_PORT", "7")],
            }),
            ..CommandInfo::default()
        });
        let env = executor_env(&params(), "fw", false, &info, Path::new("/s"));
        let m: HashMap<_, _> = as_map(&env);
        assert_eq!(m["MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"], "250ms");
        assert_eq!(m["FOO"], "bar");
        assert_eq!(m["LIBPROCESS_PORT"], "7", "CommandInfo.environment comes last");
        let parsed = ExecutorEnv::from_lookup(|k| m.get(k).cloned()).unwrap();
        assert_eq!(parsed.shutdown_grace_period, Duration::from_millis(250));
    }
}
