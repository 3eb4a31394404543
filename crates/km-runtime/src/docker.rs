//! The Docker runtime, through the engine API (bollard, unix socket).
//!
//! Per pod, a sandbox container (`km_POD_<namespace>_<name>_<uid>`) running
//! the sandbox image owns the network and IPC namespaces, like Kubernetes'
//! pause container: it publishes every hostPort of the pod, and the app
//! containers join it with `network_mode: container:<sandbox>`. The sandbox
//! runs its image's own command: [`DEFAULT_SANDBOX_IMAGE`] (Kubernetes' pause)
//! in production, the locally built `km-test/pause` (busybox's `sleep`) in tests.
//!
//! Every container (sandbox and app) carries `io.km.pod.name`,
//! `io.km.pod.namespace`, `io.km.pod.uid` (and `io.km.task.id` for the
//! executor), plus `io.km.owner` naming this runtime instance, so
//! [`ContainerRuntime::list_owned`] finds everything a previous run left,
//! and two km instances on one engine leave each other alone.
//!
//! Images: there is no registry, so images are used when present.
//! `imagePullPolicy: Never` with an absent image fails with
//! `ErrImageNeverPull`; otherwise an absent image is pulled, and a failed
//! pull is `ErrImagePull` with the engine's message. `Always` with a
//! present image tries the pull and falls back to the local image when the
//! pull fails (logged), so pods keep starting without a registry.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1 as k8s;

use crate::error::{Error, Result};
use crate::pod::{
    LABEL_CONTAINER, LABEL_OWNER, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, PodKey,
    PodPlan, PullPolicy,
};
use crate::runtime::{
    Adopted, ContainerRuntime, ExecOutput, ExecRequest, ExecSession, Exit, LogOptions, LogStream,
    OwnedContainer, OwnedPod, Sandbox, Started,
};

/// Name of the sandbox in the `io.km.container.name` label.
const SANDBOX_NAME: &str = "POD";

/// The sandbox (pod infra) image Kubernetes' kubelet uses: a static `pause` that holds the
/// pod's namespaces and does nothing else.
pub const DEFAULT_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// How the Docker runtime is set up.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// Host directory for emptyDir volumes (`<root>/pods/<sandbox>/volumes`).
    pub root_dir: PathBuf,
    /// Value of the `io.km.owner` label; identifies this runtime instance.
    pub owner: String,
    /// Image of the sandbox container, run with its own entrypoint and command, which must
    /// keep running (as `pause` does); pulled when absent.
    pub sandbox_image: String,
}

impl DockerConfig {
    /// A root directory, an owner label and the sandbox image.
    pub fn new(
        root_dir: PathBuf,
        owner: impl Into<String>,
        sandbox_image: impl Into<String>,
    ) -> DockerConfig {
        DockerConfig { root_dir, owner: owner.into(), sandbox_image: sandbox_image.into() }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
}

fn derr(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.into();
    move |source| Error::Docker { what, source }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

fn parse_time(s: Option<&str>) -> Option<SystemTime> {
    let ts: k8s_openapi::jiff::Timestamp = s?.parse().ok()?;
    let secs = u64::try_from(ts.as_second()).ok()?;
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(secs)
            + Duration::from_nanos(u64::from(ts.subsec_nanosecond().unsigned_abs())),
    )
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`)
    /// and checks that it answers.
    pub async fn connect(config: DockerConfig) -> Result<DockerRuntime> {
        let docker =
            Docker::connect_with_local_defaults().map_err(derr("connecting to the engine"))?;
        docker.ping().await.map_err(derr("ping (is the Docker engine running?)"))?;
        Ok(DockerRuntime { docker, config })
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The engine client, for tests.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn labels(&self, plan: &PodPlan, container: &str) -> HashMap<String, String> {
        let mut l: HashMap<String, String> = plan.owner_labels().into_iter().collect();
        l.insert(LABEL_CONTAINER.into(), container.into());
        l.insert(LABEL_OWNER.into(), self.config.owner.clone());
        l
    }

    fn sandbox_name(key: &PodKey) -> String {
        format!("km_{SANDBOX_NAME}_{}_{}_{}", key.namespace, key.name, key.uid)
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<()> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(derr(format!("inspecting image {image}"))(e)),
        };
        match (policy, present) {
            (PullPolicy::Never, false) => Err(Error::ImageNeverPull { image: image.into() }),
            (PullPolicy::Never | PullPolicy::IfNotPresent, true) => Ok(()),
            (_, _) => match self.pull(image).await {
                Ok(()) => Ok(()),
                Err(message) if present => {
                    tracing::warn!(image, "pull failed ({message}); using the local image");
                    Ok(())
                }
                Err(message) => Err(Error::ImagePull { image: image.into(), message }),
            },
        }
    }

    async fn pull(&self, image: &str) -> std::result::Result<(), String> {
        let opts = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn volume_bind(
        &self,
        sandbox: &Sandbox,
        plan: &PodPlan,
        m: &crate::pod::Mount,
    ) -> Result<String> {
        let cfg_err = |message: String| Error::Config { container: m.volume.clone(), message };
        let v: &k8s::Volume = plan
            .volumes
            .iter()
            .find(|v| v.name == m.volume)
            .ok_or_else(|| cfg_err(format!("volume {:?} is not defined", m.volume)))?;
        let mut source = if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else if v.empty_dir.is_some() {
            self.config.root_dir.join("pods").join(&sandbox.id).join("volumes").join(&v.name)
        } else if v.config_map.is_some() || v.secret.is_some() {
            return Err(cfg_err(format!(
                "volume {:?}: configMap and secret volumes need an API server (--api-servers)",
                v.name
            )));
        } else {
            return Err(cfg_err(format!(
                "volume {:?}: only emptyDir and hostPath volumes are supported",
                v.name
            )));
        };
        if let Some(sub) = &m.sub_path {
            source = source.join(sub);
        }
        let ro = if m.read_only { ":ro" } else { "" };
        Ok(format!("{}:{}{ro}", source.display(), m.container_path))
    }

    async fn remove_force(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // "removal already in progress"
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                Ok(())
            }
            Err(e) => Err(derr(format!("removing container {id}"))(e)),
        }
    }

    async fn list(&self, filters: Vec<String>) -> Result<Vec<bollard::models::ContainerSummary>> {
        let mut f = HashMap::new();
        f.insert("label".to_owned(), filters);
        let opts = ListContainersOptions { all: true, filters: Some(f), ..Default::default() };
        self.docker.list_containers(Some(opts)).await.map_err(derr("listing containers"))
    }
}

impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn adopt(&self, plan: &PodPlan) -> Result<Option<Adopted>> {
        let all = self
            .list(vec![
                format!("{LABEL_POD_UID}={}", plan.key.uid),
                format!("{LABEL_OWNER}={}", self.config.owner),
            ])
            .await?;
        let running = |c: &&bollard::models::ContainerSummary| {
            matches!(c.state, Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
        };
        let named = |name: &str| {
            all.iter()
                .filter(running)
                .find(|c| {
                    c.labels.as_ref().and_then(|l| l.get(LABEL_CONTAINER)).map(String::as_str)
                        == Some(name)
                })
                .and_then(|c| c.id.clone())
        };
        let Some(sandbox_id) = named(SANDBOX_NAME) else { return Ok(None) };
        let info = self
            .docker
            .inspect_container(&sandbox_id, None::<InspectContainerOptions>)
            .await
            .map_err(derr(format!("inspecting sandbox {sandbox_id}")))?;
        let pod_ip = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.values().find_map(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty());
        let sandbox = Sandbox { id: Self::sandbox_name(&plan.key), key: plan.key.clone(), pod_ip };
        let mut containers = Vec::with_capacity(plan.containers.len());
        for c in &plan.containers {
            let started = match named(&c.name) {
                Some(id) => {
                    let info = self
                        .docker
                        .inspect_container(&id, None::<InspectContainerOptions>)
                        .await
                        .map_err(derr(format!("inspecting {id}")))?;
                    let at = info.state.and_then(|s| parse_time(s.started_at.as_deref()));
                    Some(Started { id, started_at: at.unwrap_or_else(SystemTime::now) })
                }
                None => None,
            };
            containers.push(started);
        }
        Ok(Some(Adopted { sandbox, containers }))
    }

    async fn create_sandbox(&self, plan: &PodPlan) -> Result<Sandbox> {
        let name = Self::sandbox_name(&plan.key);
        let vol_dir = self.config.root_dir.join("pods").join(&name).join("volumes");
        for v in &plan.volumes {
            if v.empty_dir.is_some() {
                let d = vol_dir.join(&v.name);
                std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            }
        }
        // A sandbox left by an earlier attempt with the same uid is replaced.
        self.remove_force(&name).await?;
        self.ensure_image(&self.config.sandbox_image, PullPolicy::IfNotPresent).await?;
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for c in &plan.containers {
            for p in &c.ports {
                let key = format!("{}/{}", p.container_port, p.protocol);
                exposed.push(key.clone());
                if let Some(hp) = p.host_port {
                    bindings
                        .entry(key)
                        .or_insert_with(|| Some(Vec::new()))
                        .get_or_insert_with(Vec::new)
                        .push(PortBinding {
                            host_ip: p.host_ip.clone(),
                            host_port: Some(hp.to_string()),
                        });
                }
            }
        }
        let host_config = HostConfig {
            network_mode: Some(if plan.host_network { "host" } else { "bridge" }.into()),
            ipc_mode: Some("shareable".into()),
            port_bindings: (!plan.host_network && !bindings.is_empty()).then_some(bindings),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(self.config.sandbox_image.clone()),
            hostname: (!plan.host_network).then(|| plan.hostname.clone()),
            labels: Some(self.labels(plan, SANDBOX_NAME)),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(derr(format!("creating sandbox {name}")))?;
        self.docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(derr(format!("starting sandbox {name}")))?;
        let info = self
            .docker
            .inspect_container(&created.id, None::<InspectContainerOptions>)
            .await
            .map_err(derr(format!("inspecting sandbox {name}")))?;
        let pod_ip = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.values().find_map(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty());
        Ok(Sandbox { id: name, key: plan.key.clone(), pod_ip })
    }

    async fn start_container(
        &self,
        sandbox: &Sandbox,
        plan: &PodPlan,
        index: usize,
    ) -> Result<Started> {
        let c = plan
            .containers
            .get(index)
            .ok_or_else(|| Error::NotFound(format!("container #{index}")))?;
        let image = c.image.clone().unwrap_or_default();
        self.ensure_image(&image, c.pull_policy).await?;
        let mut binds = Vec::new();
        for m in &c.mounts {
            binds.push(self.volume_bind(sandbox, plan, m).map_err(|e| match e {
                Error::Config { message, .. } => {
                    Error::Config { container: c.name.clone(), message }
                }
                other => other,
            })?);
        }
        // Earlier runs of this container are removed; the newest keeps its logs
        // until the next start.
        let prefix = format!("km_{}_{}", c.name, sandbox.id.trim_start_matches("km_POD_"));
        for old in self
            .list(vec![
                format!("{LABEL_POD_UID}={}", plan.key.uid),
                format!("{LABEL_CONTAINER}={}", c.name),
            ])
            .await?
        {
            if let Some(id) = old.id {
                self.remove_force(&id).await?;
            }
        }
        let host_config = HostConfig {
            network_mode: Some(format!("container:{}", sandbox.id)),
            ipc_mode: Some(format!("container:{}", sandbox.id)),
            memory: c.limits.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            nano_cpus: c
                .limits
                .cpu_millis
                .and_then(|m| i64::try_from(m.saturating_mul(1_000_000)).ok()),
            binds: (!binds.is_empty()).then_some(binds),
            ..Default::default()
        };
        let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            entrypoint: (!c.command.is_empty()).then(|| c.command.clone()),
            cmd: (!c.args.is_empty()).then(|| c.args.clone()),
            env: (!env.is_empty()).then_some(env),
            working_dir: c.working_dir.clone(),
            labels: Some(self.labels(plan, &c.name)),
            stop_timeout: i64::try_from(plan.grace_period.as_secs()).ok(),
            host_config: Some(host_config),
            ..Default::default()
        };
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("{prefix}_{nanos:x}");
        let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let created = self.docker.create_container(Some(opts), body).await.map_err(|e| {
            Error::Exec { container: c.name.clone(), binary: image.clone(), message: e.to_string() }
        })?;
        self.docker.start_container(&created.id, None::<StartContainerOptions>).await.map_err(
            |e| Error::Exec {
                container: c.name.clone(),
                binary: image.clone(),
                message: e.to_string(),
            },
        )?;
        Ok(Started { id: created.id, started_at: SystemTime::now() })
    }

    async fn wait(&self, id: &str) -> Result<Exit> {
        let mut stream = self.docker.wait_container(id, None::<WaitContainerOptions>);
        // Non-zero exits arrive as errors; the state is read back below.
        while stream.next().await.is_some() {}
        let info = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(derr(format!("inspecting {id}")))?;
        let state = info.state.unwrap_or_default();
        if state.running == Some(true) {
            return Err(Error::Other(format!(
                "{id}: wait returned while the container still runs"
            )));
        }
        let exit_code = i32::try_from(state.exit_code.unwrap_or(255)).unwrap_or(255);
        let reason = if state.oom_killed == Some(true) {
            "OOMKilled".to_owned()
        } else {
            Exit::reason_for(exit_code).to_owned()
        };
        let finished_at = parse_time(state.finished_at.as_deref()).unwrap_or_else(SystemTime::now);
        Ok(Exit { exit_code, reason, finished_at })
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions { t: Some(t), signal: Some("SIGTERM".into()) };
        match self.docker.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .docker
                    .kill_container(id, Some(KillContainerOptions { signal: "SIGKILL".into() }))
                    .await;
                Err(derr(format!("stopping {id}"))(e))
            }
        }
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<i32> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let opts = CreateExecOptions::<String> {
            cmd: Some(cmd.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let run = async {
            let exec =
                self.docker.create_exec(id, opts).await.map_err(derr(format!("exec in {id}")))?;
            let started = self
                .docker
                .start_exec(
                    &exec.id,
                    Some(StartExecOptions { detach: false, ..Default::default() }),
                )
                .await
                .map_err(derr(format!("exec in {id}")))?;
            if let StartExecResults::Attached { mut output, .. } = started {
                while output.next().await.is_some() {}
            }
            let info =
                self.docker.inspect_exec(&exec.id).await.map_err(derr(format!("exec in {id}")))?;
            Ok(i32::try_from(info.exit_code.unwrap_or(126)).unwrap_or(126))
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| {
            Error::Other(format!("exec {cmd:?} in {id}: timed out after {timeout:?}"))
        })?
    }

    async fn exec_session(&self, id: &str, req: &ExecRequest) -> Result<ExecSession> {
        use bollard::container::LogOutput;
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let what = || format!("exec {:?} in {id}", req.command);
        let opts = CreateExecOptions::<String> {
            cmd: Some(req.command.clone()),
            attach_stdin: Some(req.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(req.tty),
            ..Default::default()
        };
        let exec = self.docker.create_exec(id, opts).await.map_err(derr(what()))?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions { detach: false, tty: req.tty, ..Default::default() }),
            )
            .await
            .map_err(derr(what()))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(Error::Other(format!("{}: the engine detached the command", what())));
        };
        let output = output.filter_map(move |item| {
            futures::future::ready(match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok(ExecOutput::Stdout(message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok(ExecOutput::Stderr(message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(Error::Docker { what: "exec output".into(), source: e })),
            })
        });
        let docker = self.docker.clone();
        let exec_id = exec.id;
        let exit = async move {
            // The engine may report the command as running for a moment after its output ended.
            for _ in 0..100 {
                let info = docker
                    .inspect_exec(&exec_id)
                    .await
                    .map_err(derr(format!("inspecting exec {exec_id}")))?;
                if info.running != Some(true) {
                    return Ok(info.exit_code.and_then(|c| i32::try_from(c).ok()).unwrap_or(126));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(Error::Other(format!("exec {exec_id} still runs after its output ended")))
        };
        Ok(ExecSession {
            stdin: req.stdin.then_some(input),
            output: Box::pin(output),
            exit: Box::pin(exit),
        })
    }

    async fn logs(&self, id: &str, opts: LogOptions) -> Result<LogStream> {
        let o = LogsOptions {
            follow: opts.follow,
            stdout: true,
            stderr: true,
            tail: opts.tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
            ..Default::default()
        };
        // Check the container exists so a bad id is an error, not an empty stream.
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(derr(format!("inspecting {id}")))?;
        let id = id.to_owned();
        let stream = self.docker.logs(&id, Some(o)).map(move |item| {
            item.map(|chunk| chunk.into_bytes().to_vec()).map_err(derr(format!("logs of {id}")))
        });
        Ok(Box::pin(stream))
    }

    async fn remove_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        let all = self
            .list(vec![
                format!("{LABEL_POD_UID}={}", sandbox.key.uid),
                format!("{LABEL_OWNER}={}", self.config.owner),
            ])
            .await?;
        // App containers first, in parallel; the sandbox last.
        let apps = all.iter().filter(|c| {
            c.labels.as_ref().and_then(|l| l.get(LABEL_CONTAINER)).map(String::as_str)
                != Some(SANDBOX_NAME)
        });
        let results = futures::future::join_all(
            apps.filter_map(|c| c.id.as_deref()).map(|id| self.remove_force(id)),
        )
        .await;
        for r in results {
            r?;
        }
        self.remove_force(&sandbox.id).await?;
        let dir = self.config.root_dir.join("pods").join(&sandbox.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(dir, e)),
        }
    }

    async fn list_owned(&self) -> Result<Vec<OwnedPod>> {
        let all = self.list(vec![format!("{LABEL_OWNER}={}", self.config.owner)]).await?;
        let mut pods: BTreeMap<String, OwnedPod> = BTreeMap::new();
        for c in all {
            let labels: BTreeMap<String, String> =
                c.labels.clone().unwrap_or_default().into_iter().collect();
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            let key = PodKey {
                namespace: get(LABEL_POD_NAMESPACE),
                name: get(LABEL_POD_NAME),
                uid: get(LABEL_POD_UID),
            };
            let running =
                matches!(c.state, Some(bollard::models::ContainerSummaryStateEnum::RUNNING));
            let name = get(LABEL_CONTAINER);
            let entry = pods.entry(key.uid.clone()).or_insert_with(|| OwnedPod {
                sandbox_id: Self::sandbox_name(&key),
                key: key.clone(),
                labels: labels.clone(),
                containers: Vec::new(),
            });
            entry.containers.push(OwnedContainer { id: c.id.unwrap_or_default(), name, running });
        }
        Ok(pods.into_values().collect())
    }

    async fn remove_owned(&self, pod: &OwnedPod) -> Result<()> {
        for c in &pod.containers {
            self.remove_force(&c.id).await?;
        }
        self.remove_sandbox(&Sandbox {
            id: pod.sandbox_id.clone(),
            key: pod.key.clone(),
            pod_ip: None,
        })
        .await
    }
}
