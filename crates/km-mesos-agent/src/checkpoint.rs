//! Checkpoints under `<work_dir>/meta/`, so a restarted agent keeps its id
//! and re-adopts the executors of checkpointing frameworks:
//!
//! - `meta/agent_id`: the id the master gave (re-registration uses it);
//! - `meta/frameworks/<fw>/executors/<ex>.json`: FrameworkInfo, ExecutorInfo,
//!   container, sandbox, pid, tasks and unacknowledged status updates of a
//!   custom executor whose framework has `checkpoint: true`. Protobuf
//!   messages are stored as base64 of their binary encoding.
//!
//! Files are written to a temporary name, flushed to disk (`fsync`) and
//! renamed into place, and the directory is flushed too, so a checkpoint
//! survives a crash of the machine, not only of the agent. The running agent
//! writes through a [`Writer`]: its lock only queues the bytes, and one thread
//! writes them in the order they were queued.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use km_mesos::v1::{ExecutorInfo, FrameworkInfo, TaskInfo, TaskState, TaskStatus};

use crate::state::{Executor, ExecutorKind, Launch, Phase, TaskEntry};

fn meta(work_dir: &Path) -> PathBuf {
    work_dir.join("meta")
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(parent)?.sync_all()
}

enum Job {
    Put(PathBuf, Vec<u8>),
    Remove(PathBuf),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Writes checkpoints on a thread of its own, in the order they are queued.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Put(p, _) => write!(f, "Put({})", p.display()),
            Job::Remove(p) => write!(f, "Remove({})", p.display()),
            Job::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Writer {
    /// Starts the writing thread.
    pub fn start() -> std::io::Result<Writer> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("km-checkpoints".into()).spawn(move || {
            for job in rx {
                match job {
                    Job::Put(path, bytes) => {
                        if let Err(e) = write_atomic(&path, &bytes) {
                            tracing::error!(path = %path.display(), "cannot write a checkpoint: {e}");
                        }
                    }
                    Job::Remove(path) => match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::warn!(path = %path.display(), "cannot remove a checkpoint: {e}");
                        }
                    },
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(Writer { tx })
    }

    fn queue(&self, job: Job) {
        if self.tx.send(job).is_err() {
            tracing::error!("the checkpoint thread is gone; a checkpoint is lost");
        }
    }

    /// Queues an executor's checkpoint.
    pub fn save_executor(
        &self,
        work_dir: &Path,
        framework: &FrameworkInfo,
        e: &Executor,
        pending: Vec<TaskStatus>,
    ) -> std::io::Result<()> {
        let (path, bytes) = executor_record(work_dir, framework, e, pending)?;
        self.queue(Job::Put(path, bytes));
        Ok(())
    }

    /// Queues the removal of an executor's checkpoint.
    pub fn remove_executor(&self, work_dir: &Path, fw: &str, ex: &str) {
        self.queue(Job::Remove(executor_path(work_dir, fw, ex)));
    }

    /// Returns once everything queued before is on disk.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        self.queue(Job::Flush(done));
        let _ = written.await;
    }
}

/// Persists the agent id.
pub fn save_agent_id(work_dir: &Path, id: &str) -> std::io::Result<()> {
    write_atomic(&meta(work_dir).join("agent_id"), id.as_bytes())
}

/// The persisted agent id, if any.
pub fn load_agent_id(work_dir: &Path) -> Option<String> {
    std::fs::read_to_string(meta(work_dir).join("agent_id"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TaskRecord {
    info: String,
    state: i32,
    delivered: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ExecutorRecord {
    framework_info: String,
    executor_info: String,
    kind: ExecutorKind,
    container_id: String,
    directory: PathBuf,
    pid: Option<i32>,
    tasks: Vec<TaskRecord>,
    pending_updates: Vec<String>,
}

fn enc<M: prost::Message>(m: &M) -> String {
    STANDARD.encode(m.encode_to_vec())
}

fn dec<M: prost::Message + Default>(s: &str) -> Option<M> {
    STANDARD.decode(s).ok().and_then(|b| M::decode(b.as_slice()).ok())
}

fn executor_path(work_dir: &Path, fw: &str, ex: &str) -> PathBuf {
    meta(work_dir).join("frameworks").join(fw).join("executors").join(format!("{ex}.json"))
}

/// Persists one executor.
pub fn save_executor(
    work_dir: &Path,
    framework: &FrameworkInfo,
    e: &Executor,
    pending: Vec<TaskStatus>,
) -> std::io::Result<()> {
    let (path, bytes) = executor_record(work_dir, framework, e, pending)?;
    write_atomic(&path, &bytes)
}

/// An executor's checkpoint file and its bytes.
fn executor_record(
    work_dir: &Path,
    framework: &FrameworkInfo,
    e: &Executor,
    pending: Vec<TaskStatus>,
) -> std::io::Result<(PathBuf, Vec<u8>)> {
    let fw = crate::state::framework_id(framework);
    let record = ExecutorRecord {
        framework_info: enc(framework),
        executor_info: enc(&e.info),
        kind: e.kind,
        container_id: e.container_id.clone(),
        directory: e.directory.clone(),
        pid: e.pid,
        tasks: e
            .tasks
            .values()
            .map(|t| TaskRecord {
                info: enc(&t.info),
                state: t.state as i32,
                delivered: t.delivered,
            })
            .collect(),
        pending_updates: pending.iter().map(enc).collect(),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    Ok((executor_path(work_dir, &fw, &e.info.executor_id.value), json))
}

/// Forgets one executor.
pub fn remove_executor(work_dir: &Path, fw: &str, ex: &str) {
    let _ = std::fs::remove_file(executor_path(work_dir, fw, ex));
}

/// A checkpointed executor read back.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Its framework.
    pub framework: FrameworkInfo,
    /// The executor, in phase `Launching` (waiting for its re-subscription).
    pub executor: Executor,
    /// Unacknowledged status updates of its tasks, oldest first.
    pub pending: Vec<TaskStatus>,
}

/// Reads every checkpointed executor; unreadable files are skipped with a warning.
pub fn load_executors(work_dir: &Path) -> Vec<Recovered> {
    let mut out = Vec::new();
    let Ok(frameworks) = std::fs::read_dir(meta(work_dir).join("frameworks")) else { return out };
    for fw_dir in frameworks.flatten() {
        let Ok(files) = std::fs::read_dir(fw_dir.path().join("executors")) else { continue };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match load_one(&path) {
                Some(r) => out.push(r),
                None => tracing::warn!(path = %path.display(), "skipping an unreadable checkpoint"),
            }
        }
    }
    out
}

fn load_one(path: &Path) -> Option<Recovered> {
    let record: ExecutorRecord = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let framework: FrameworkInfo = dec(&record.framework_info)?;
    let info: ExecutorInfo = dec(&record.executor_info)?;
    let mut tasks = std::collections::BTreeMap::new();
    let mut queued = Vec::new();
    for t in record.tasks {
        let task: TaskInfo = dec(&t.info)?;
        if !t.delivered {
            queued.push(Launch::Task(task.clone()));
        }
        let state = TaskState::try_from(t.state).unwrap_or(TaskState::TaskStaging);
        tasks.insert(
            task.task_id.value.clone(),
            TaskEntry { info: task, state, delivered: t.delivered },
        );
    }
    let pending = record.pending_updates.iter().filter_map(|s| dec(s)).collect();
    Some(Recovered {
        framework,
        executor: Executor {
            info,
            kind: record.kind,
            container_id: record.container_id,
            directory: record.directory,
            phase: Phase::Launching,
            queued,
            tasks,
            pid: record.pid,
        },
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use km_mesos::v1::{ExecutorId, FrameworkId, TaskId};

    #[tokio::test]
    async fn agent_id_and_executors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_agent_id(dir.path()), None);
        save_agent_id(dir.path(), "m-S1").unwrap();
        assert_eq!(load_agent_id(dir.path()).as_deref(), Some("m-S1"));

        let fw = FrameworkInfo {
            id: Some(FrameworkId { value: "fw".into() }),
            checkpoint: Some(true),
            ..Default::default()
        };
        let task = TaskInfo {
            task_id: TaskId { value: "t".into() },
            name: "t".into(),
            ..Default::default()
        };
        let e = Executor {
            info: ExecutorInfo {
                executor_id: ExecutorId { value: "e".into() },
                ..Default::default()
            },
            kind: ExecutorKind::Custom,
            container_id: "c".into(),
            directory: "/s".into(),
            phase: Phase::Running,
            queued: vec![],
            tasks: [(
                "t".to_owned(),
                TaskEntry { info: task.clone(), state: TaskState::TaskRunning, delivered: true },
            )]
            .into(),
            pid: Some(42),
        };
        let update = TaskStatus {
            task_id: task.task_id.clone(),
            uuid: Some(vec![1; 16]),
            ..Default::default()
        };
        save_executor(dir.path(), &fw, &e, vec![update.clone()]).unwrap();
        let back = load_executors(dir.path());
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].framework, fw);
        assert_eq!(back[0].executor.pid, Some(42));
        assert_eq!(back[0].executor.phase, Phase::Launching);
        assert_eq!(back[0].executor.tasks["t"].state, TaskState::TaskRunning);
        assert_eq!(back[0].pending, vec![update]);
        remove_executor(dir.path(), "fw", "e");
        assert!(load_executors(dir.path()).is_empty());

        // Through the writer: jobs land in the order they were queued, and a
        // flush returns once they are on disk.
        let writer = Writer::start().unwrap();
        let mut later = e.clone();
        later.pid = Some(43);
        writer.save_executor(dir.path(), &fw, &e, vec![]).unwrap();
        writer.remove_executor(dir.path(), "fw", "e");
        writer.save_executor(dir.path(), &fw, &later, vec![]).unwrap();
        writer.flush().await;
        let back = load_executors(dir.path());
        assert_eq!(back.len(), 1, "the last save comes after the removal");
        assert_eq!(back[0].executor.pid, Some(43), "and is the one on disk");
        assert!(
            !dir.path().join("meta/frameworks/fw/executors/e.tmp").exists(),
            "no temporary file is left"
        );
    }
}
