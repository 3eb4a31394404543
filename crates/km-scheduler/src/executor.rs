//! The km executor as Mesos sees it: the `ExecutorInfo` every task carries.
//!
//! One prototype is built at start-up from the flags: `km executor` with the forwarded flags,
//! fetched from a URI, found on the agent, or served by this scheduler. Its ID is the hash of
//! that configuration (`km_scheduler_core::executor_id`), so any change of the binary's location
//! or of a forwarded flag gives a new ID.
//!
//! Mesos refuses a task whose `ExecutorInfo` differs from the running executor's of the same ID,
//! so the exact `ExecutorInfo` each agent's executor was started with (resources and static pod
//! data included) is remembered and reused until that executor is gone; the resources are also
//! recorded on the agent's Node so that a restarted scheduler can rebuild it.

use std::collections::HashMap;
use std::path::PathBuf;

use km_mesos::resources::{self as mesos_resources, Format};
use km_mesos::v1;
use km_offer_matcher::{Resource, Scalars};
use km_scheduler_core::ExecutorChoice;
use km_scheduler_core::executor_id::{
    self, CommandSpec, EXECUTOR_NAME, EXECUTOR_SOURCE, ExecutorSpec, UriSpec,
};

use crate::settings::{ExecutorSettings, ExecutorSource};

/// The executor prototype and the executors started per agent.
#[derive(Debug)]
pub(crate) struct Executors {
    prototype: v1::ExecutorInfo,
    id: String,
    base: Scalars,
    static_data: Option<Vec<u8>>,
    static_resources: Scalars,
    per_agent: HashMap<String, v1::ExecutorInfo>,
    served: Option<(String, PathBuf)>,
}

/// A digest of the served file's content (CRC-64, hex). It goes into the binary's URL, so
/// that agents, which cache what they fetch by URL, never run an old binary under a new one's
/// name, and a new binary gets a new executor ID (and with it the rolling executor upgrade),
/// while schedulers of an HA group running the same build agree on it wherever it is installed.
fn version(path: &std::path::Path) -> Option<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).ok()?;
    let crc = crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_XZ);
    let mut digest = crc.digest();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => digest.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(format!("{:x}", digest.finalize()))
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

impl Executors {
    /// The prototype for these settings; `advertised` is the base URL of this scheduler.
    pub(crate) fn new(settings: &ExecutorSettings, advertised: &str) -> Executors {
        let (value, uris, served) = match &settings.source {
            ExecutorSource::Fetch(uri) => {
                let uri = uri.split(['?', '#']).next().unwrap_or(uri);
                (format!("./{}", basename(uri)), vec![(uri.to_owned(), true)], None)
            }
            ExecutorSource::AgentLocal(path) => (path.clone(), Vec::new(), None),
            ExecutorSource::Served(path) => {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("km").to_owned();
                let mut url = format!("{}/{name}", advertised.trim_end_matches('/'));
                if let Some(v) = version(path) {
                    url = format!("{url}?v={v}");
                }
                (format!("./{name}"), vec![(url, true)], Some((name, path.clone())))
            }
        };
        let mut arguments = vec![value.clone(), "executor".to_owned()];
        arguments.extend(settings.args.iter().cloned());
        let spec = ExecutorSpec {
            name: EXECUTOR_NAME.to_owned(),
            source: EXECUTOR_SOURCE.to_owned(),
            data: Vec::new(),
            command: Some(CommandSpec {
                value: value.clone(),
                user: None,
                shell: false,
                arguments: arguments.clone(),
                environment: Vec::new(),
                uris: uris
                    .iter()
                    .map(|(v, exe)| UriSpec { value: v.clone(), executable: *exe, extract: false })
                    .collect(),
            }),
        };
        let id = executor_id::executor_id(&spec);
        #[allow(deprecated)]
        let mut prototype = v1::ExecutorInfo {
            executor_id: v1::ExecutorId { value: id.clone() },
            name: Some(EXECUTOR_NAME.to_owned()),
            source: Some(EXECUTOR_SOURCE.to_owned()),
            command: Some(v1::CommandInfo {
                value: Some(value),
                shell: Some(false),
                arguments,
                uris: uris
                    .into_iter()
                    .map(|(value, executable)| v1::command_info::Uri {
                        value,
                        executable: Some(executable),
                        extract: Some(false),
                        cache: Some(true),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        prototype.set_type(v1::executor_info::Type::Custom);
        Executors {
            prototype,
            id,
            base: settings.base,
            static_data: None,
            static_resources: Scalars::ZERO,
            per_agent: HashMap::new(),
            served,
        }
    }

    /// The executor ID of the current configuration.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// What a new executor needs: its own cpus and mem plus the static pods'.
    pub(crate) fn resources(&self) -> Scalars {
        self.base.plus(&self.static_resources)
    }

    /// The file this scheduler serves for the agents to fetch (URL path name, local path).
    pub(crate) fn served(&self) -> Option<&(String, PathBuf)> {
        self.served.as_ref()
    }

    /// The prototype (without resources).
    #[cfg(test)]
    pub(crate) fn prototype(&self) -> &v1::ExecutorInfo {
        &self.prototype
    }

    /// Sets the static pods that new executors get.
    pub(crate) fn set_static_pods(&mut self, data: Option<Vec<u8>>, resources: Scalars) {
        self.static_data = data;
        self.static_resources = resources;
    }

    /// The `ExecutorInfo` for an ACCEPT on `agent_id`. A new executor is built from the
    /// current prototype and remembered; a running one is the one remembered (or rebuilt with
    /// the resources known for it).
    pub(crate) fn for_accept(
        &mut self,
        agent_id: &str,
        choice: &ExecutorChoice,
    ) -> (v1::ExecutorInfo, bool) {
        match choice {
            ExecutorChoice::New(resources) => {
                let info = self.build(resources);
                self.per_agent.insert(agent_id.to_owned(), info.clone());
                (info, true)
            }
            ExecutorChoice::Running(known) => {
                if let Some(info) = self.per_agent.get(agent_id) {
                    return (info.clone(), false);
                }
                let resources: Vec<Resource> = match known {
                    Some(r) => r.clone(),
                    None => scalars_to_resources(&self.resources()),
                };
                let info = self.build(&resources);
                self.per_agent.insert(agent_id.to_owned(), info.clone());
                (info, false)
            }
        }
    }

    /// Forgets what ran on an agent (its executor exited or the agent is gone).
    pub(crate) fn forget(&mut self, agent_id: &str) {
        self.per_agent.remove(agent_id);
    }

    fn build(&self, resources: &[Resource]) -> v1::ExecutorInfo {
        let mut info = self.prototype.clone();
        info.resources = mesos_resources::resources_to_proto(resources, Format::PreRefinement);
        info.data = self.static_data.clone();
        info
    }
}

/// Unreserved cpus and mem resources.
pub(crate) fn scalars_to_resources(s: &Scalars) -> Vec<Resource> {
    s.iter_nonzero()
        .map(|(k, v)| Resource::with_value(k.name(), km_offer_matcher::Value::Scalar(v)))
        .collect()
}

/// The executor resources recorded on a Node (see
/// [`km_mesos::resources::encode_node_annotation`]); `None` if any part is not a resource.
pub(crate) fn decode_resources(text: &str) -> Option<Vec<Resource>> {
    km_mesos::resources::decode_node_annotation(text)?
        .iter()
        .map(|r| mesos_resources::from_proto(r).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use km_offer_matcher::{Scalar, ScalarKind};

    use super::*;

    fn settings(source: ExecutorSource) -> ExecutorSettings {
        ExecutorSettings {
            source,
            args: vec!["--suicide-timeout=20m".into()],
            base: Scalars::cpus_mem(Scalar::from_milli(250), Scalar::from_units(128)),
        }
    }

    #[test]
    #[allow(deprecated)]
    fn every_source_gives_its_command() {
        let e = Executors::new(
            &settings(ExecutorSource::Fetch("http://repo/bin/km?x=1".into())),
            "http://s:1",
        );
        let cmd = e.prototype().command.clone().unwrap();
        assert_eq!(cmd.value.as_deref(), Some("./km"));
        assert_eq!(cmd.arguments[..2], ["./km".to_owned(), "executor".to_owned()]);
        assert_eq!(cmd.uris[0].value, "http://repo/bin/km");
        assert_eq!(cmd.uris[0].executable, Some(true));
        assert_eq!(cmd.uris[0].cache, Some(true));
        assert!(e.served().is_none());

        let e = Executors::new(
            &settings(ExecutorSource::AgentLocal("/usr/bin/km".into())),
            "http://s:1",
        );
        let cmd = e.prototype().command.clone().unwrap();
        assert_eq!(cmd.value.as_deref(), Some("/usr/bin/km"));
        assert!(cmd.uris.is_empty());

        let e = Executors::new(
            &settings(ExecutorSource::Served("/opt/km/km".into())),
            "http://10.0.0.1:10251",
        );
        let cmd = e.prototype().command.clone().unwrap();
        assert_eq!(cmd.uris[0].value, "http://10.0.0.1:10251/km");
        assert_eq!(cmd.uris[0].cache, Some(true), "agents keep the binary in their fetcher cache");
        assert_eq!(e.served().map(|s| s.0.as_str()), Some("km"));
        assert!(e.id().ends_with("_k8sm-executor"));
        assert_eq!(e.prototype().name.as_deref(), Some("Kubelet-Executor"));
        assert_eq!(e.prototype().source.as_deref(), Some("kubernetes"));
    }

    #[test]
    fn the_id_follows_the_configuration_not_the_static_pods() {
        let a = Executors::new(
            &settings(ExecutorSource::Served("/opt/km".into())),
            "http://10.0.0.1:10251",
        );
        let b = Executors::new(
            &settings(ExecutorSource::Served("/opt/km".into())),
            "http://10.0.0.2:10251",
        );
        assert_ne!(a.id(), b.id(), "the scheduler's address is part of the ID");
        let mut c = Executors::new(
            &settings(ExecutorSource::Served("/opt/km".into())),
            "http://10.0.0.1:10251",
        );
        c.set_static_pods(
            Some(vec![1, 2, 3]),
            Scalars::cpus_mem(Scalar::from_milli(100), Scalar::ZERO),
        );
        assert_eq!(a.id(), c.id());
        assert_eq!(c.resources().get(ScalarKind::Cpus), Scalar::from_milli(350));
    }

    #[test]
    fn a_new_binary_gets_a_new_url_and_executor_id() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("km");
        std::fs::write(&bin, "old").unwrap();
        let served =
            || Executors::new(&settings(ExecutorSource::Served(bin.clone())), "http://10.0.0.1:1");
        let (a, again) = (served(), served());
        let url = |e: &Executors| e.prototype().command.clone().unwrap().uris[0].value.clone();
        assert!(url(&a).starts_with("http://10.0.0.1:1/km?v="), "{}", url(&a));
        assert_eq!((a.id(), url(&a)), (again.id(), url(&again)), "same binary, same executor");
        std::fs::write(&bin, "a newer build").unwrap();
        let b = served();
        assert_ne!(url(&a), url(&b));
        assert_ne!(a.id(), b.id());
        assert_eq!(b.served().map(|s| s.0.as_str()), Some("km"));
    }

    #[test]
    fn a_running_executor_keeps_the_info_it_started_with() {
        let mut e =
            Executors::new(&settings(ExecutorSource::AgentLocal("/km".into())), "http://s:1");
        let res = scalars_to_resources(&e.resources());
        let (first, new) = e.for_accept("a1", &ExecutorChoice::New(res));
        assert!(new);
        e.set_static_pods(Some(vec![9]), Scalars::ZERO);
        let (again, new) = e.for_accept("a1", &ExecutorChoice::Running(None));
        assert!(!new);
        assert_eq!(first, again, "static pods changed, but the running executor's info did not");
        let (other, _) = e.for_accept("a2", &ExecutorChoice::Running(None));
        assert_eq!(other.data, Some(vec![9]));
    }

    #[test]
    fn node_codec_round_trips() {
        let e = Executors::new(&settings(ExecutorSource::AgentLocal("/km".into())), "http://s:1");
        let info = e.build(&scalars_to_resources(&e.resources()));
        let text = km_mesos::resources::encode_node_annotation(&info.resources);
        assert_eq!(text.split(',').count(), 2);
        let back = decode_resources(&text).unwrap();
        assert_eq!(back, scalars_to_resources(&e.resources()));
        assert!(decode_resources("not base64!").is_none());
    }
}
