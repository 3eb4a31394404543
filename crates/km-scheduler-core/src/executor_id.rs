//! The executor ID: a hash of the executor's configuration.
//!
//! Mesos refuses a task whose `ExecutorInfo` differs from the one of a running executor with
//! the same ID, so the ID must change whenever the configuration does. km derives it exactly as
//! the original k8sm did, so that an executor started by either keeps the same identity:
//!
//! 1. Concatenate, without separators: the executor name, its source, its data (empty when
//!    hashed: static pods are attached afterwards and do not change the ID), and, when there is
//!    a command: its value, its user (empty when unset), `true`/`false` for `shell`, the
//!    arguments sorted and concatenated, the environment as `name=value` sorted by name, and
//!    each URI as value + `true`/`false` (executable) + `true`/`false` (extract), sorted.
//! 2. CRC-64/XZ of those bytes (Go's `crc64` with the ECMA table).
//! 3. Lowercase hex without zero padding, then `_k8sm-executor`.
//!
//! Neither resources, labels nor the per-host `--hostname-override` take part.

use crc::{CRC_64_XZ, Crc};

/// Suffix of every executor ID.
pub const EXECUTOR_ID_SUFFIX: &str = "_k8sm-executor";

/// The executor name km (and the original) give their executors.
pub const EXECUTOR_NAME: &str = "Kubelet-Executor";

/// The executor source km (and the original) give their executors.
pub const EXECUTOR_SOURCE: &str = "kubernetes";

/// The parts of an `ExecutorInfo` that make up its identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutorSpec {
    /// `ExecutorInfo.name`.
    pub name: String,
    /// `ExecutorInfo.source`.
    pub source: String,
    /// `ExecutorInfo.data` at hash time (normally empty).
    pub data: Vec<u8>,
    /// `ExecutorInfo.command`.
    pub command: Option<CommandSpec>,
}

/// The parts of a `CommandInfo` that make up an executor's identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// `CommandInfo.value`.
    pub value: String,
    /// `CommandInfo.user`.
    pub user: Option<String>,
    /// `CommandInfo.shell`.
    pub shell: bool,
    /// `CommandInfo.arguments` (order does not matter for the ID).
    pub arguments: Vec<String>,
    /// `CommandInfo.environment` variables.
    pub environment: Vec<(String, String)>,
    /// `CommandInfo.uris`.
    pub uris: Vec<UriSpec>,
}

/// A `CommandInfo.URI`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UriSpec {
    /// `value`.
    pub value: String,
    /// `executable`.
    pub executable: bool,
    /// `extract`.
    pub extract: bool,
}

/// The bytes that are hashed (exposed for tests and debugging).
pub fn hash_input(spec: &ExecutorSpec) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(spec.name.as_bytes());
    buf.extend_from_slice(spec.source.as_bytes());
    buf.extend_from_slice(&spec.data);
    if let Some(cmd) = &spec.command {
        buf.extend_from_slice(cmd.value.as_bytes());
        buf.extend_from_slice(cmd.user.as_deref().unwrap_or_default().as_bytes());
        buf.extend_from_slice(bool_str(cmd.shell).as_bytes());
        let mut args: Vec<&str> = cmd.arguments.iter().map(String::as_str).collect();
        args.sort_unstable();
        for a in args {
            buf.extend_from_slice(a.as_bytes());
        }
        let mut env: Vec<&(String, String)> = cmd.environment.iter().collect();
        env.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in env {
            buf.extend_from_slice(k.as_bytes());
            buf.push(b'=');
            buf.extend_from_slice(v.as_bytes());
        }
        let mut uris: Vec<String> = cmd
            .uris
            .iter()
            .map(|u| format!("{}{}{}", u.value, bool_str(u.executable), bool_str(u.extract)))
            .collect();
        uris.sort_unstable();
        for u in uris {
            buf.extend_from_slice(u.as_bytes());
        }
    }
    buf
}

/// The executor ID of a configuration, e.g. `aeeccc7fd90fa74e_k8sm-executor`.
pub fn executor_id(spec: &ExecutorSpec) -> String {
    let crc = Crc::<u64>::new(&CRC_64_XZ);
    format!("{:x}{EXECUTOR_ID_SUFFIX}", crc.checksum(&hash_input(spec)))
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original_example() -> ExecutorSpec {
        ExecutorSpec {
            name: EXECUTOR_NAME.into(),
            source: EXECUTOR_SOURCE.into(),
            data: Vec::new(),
            command: Some(CommandSpec {
                value: "./km".into(),
                user: None,
                shell: false,
                arguments: vec!["./km".into(), "minion".into(), "--v=0".into()],
                environment: Vec::new(),
                uris: vec![UriSpec {
                    value: "http://10.0.0.1:10251/km".into(),
                    executable: true,
                    extract: false,
                }],
            }),
        }
    }

    #[test]
    fn crc_is_crc64_xz() {
        let crc = Crc::<u64>::new(&CRC_64_XZ);
        assert_eq!(crc.checksum(b"123456789"), 0x995d_c9bb_df19_39fa);
    }

    #[test]
    fn matches_the_original_test_vector() {
        let spec = original_example();
        assert_eq!(
            String::from_utf8(hash_input(&spec)).unwrap(),
            "Kubelet-Executorkubernetes./kmfalse--v=0./kmminionhttp://10.0.0.1:10251/kmtruefalse"
        );
        assert_eq!(executor_id(&spec), "aeeccc7fd90fa74e_k8sm-executor");
    }

    #[test]
    fn hex_is_not_zero_padded() {
        // Find an input whose CRC has a leading zero nibble and check the ID has 15 digits.
        let crc = Crc::<u64>::new(&CRC_64_XZ);
        let mut spec = original_example();
        let mut i = 0u32;
        loop {
            spec.name = format!("n{i}");
            if crc.checksum(&hash_input(&spec)) >> 60 == 0 {
                break;
            }
            i += 1;
        }
        let id = executor_id(&spec);
        let hex = id.strip_suffix(EXECUTOR_ID_SUFFIX).unwrap();
        assert!(hex.len() < 16, "{id}");
        assert!(!hex.starts_with('0'));
    }

    #[test]
    fn argument_order_is_irrelevant_and_any_change_matters() {
        let base = original_example();
        let mut reordered = base.clone();
        reordered.command.as_mut().unwrap().arguments.reverse();
        assert_eq!(executor_id(&base), executor_id(&reordered));

        let mut changed = base.clone();
        changed.command.as_mut().unwrap().arguments.push("--suicide-timeout=20m".into());
        assert_ne!(executor_id(&base), executor_id(&changed));

        let mut moved = base.clone();
        moved.command.as_mut().unwrap().uris[0].value = "http://10.0.0.2:10251/km".into();
        assert_ne!(executor_id(&base), executor_id(&moved));

        let mut shell = base.clone();
        shell.command.as_mut().unwrap().shell = true;
        assert_ne!(executor_id(&base), executor_id(&shell));
    }

    #[test]
    fn environment_is_sorted_by_name() {
        let mut a = original_example();
        a.command.as_mut().unwrap().environment =
            vec![("B".into(), "2".into()), ("A".into(), "1".into())];
        let mut b = original_example();
        b.command.as_mut().unwrap().environment =
            vec![("A".into(), "1".into()), ("B".into(), "2".into())];
        assert_eq!(executor_id(&a), executor_id(&b));
        assert!(String::from_utf8(hash_input(&a)).unwrap().contains("A=1B=2"));
    }
}
