//! How executors on one host find what a dead one left behind.
//!
//! Each executor runs its pods in its own scope: native containers under a cgroup parent and a
//! root directory of its own, Docker containers with its own owner label. It registers that
//! scope in a host-wide directory as a file it keeps locked (`flock`) as long as it lives. The
//! kernel drops the lock when the process ends, however it ends, so an unlocked file is the
//! scope of a dead executor: the next executor to start removes every pod in it, then the file.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Where an executor's pods live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// A name unique on the host (the Mesos container of the executor).
    pub instance: String,
    /// Directory of the runtimes' state (`native/`, `docker/`, `volumes/` below it).
    pub root: PathBuf,
    /// Cgroup parent of native containers.
    pub cgroup_parent: String,
    /// Owner label of Docker containers.
    pub docker_owner: String,
}

/// A registry problem; names the path.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The directory or file cannot be used.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The lock is held by another process.
    #[error("{path}: locked by a live executor ({errno})")]
    Locked {
        /// Path.
        path: PathBuf,
        /// The error of the lock attempt.
        errno: nix::errno::Errno,
    },
}

/// This executor's registration; the lock is released when it is dropped or the process ends.
#[derive(Debug)]
pub struct Registration {
    _lock: Flock<File>,
    path: PathBuf,
}

impl Registration {
    /// The registration file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_owned(), source }
}

/// Registers `scope` in `dir` and holds its lock.
pub fn register(dir: &Path, scope: &Scope) -> Result<Registration, RegistryError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(format!("{}.json", scope.instance));
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| RegistryError::Locked { path: path.clone(), errno })?;
    let text = serde_json::to_string_pretty(scope)
        .map_err(|e| RegistryError::Io { path: path.clone(), source: e.into() })?;
    lock.set_len(0).map_err(io(&path))?;
    lock.write_all(text.as_bytes()).map_err(io(&path))?;
    lock.sync_all().map_err(io(&path))?;
    Ok(Registration { _lock: lock, path })
}

/// A dead executor's scope, locked while its leftovers are removed.
#[derive(Debug)]
pub struct Dead {
    /// What it ran.
    pub scope: Scope,
    /// Its file (remove it when done).
    pub path: PathBuf,
    _lock: Flock<File>,
}

/// The scopes of dead executors in `dir` (files whose lock nobody holds). A file that cannot be
/// read as a scope is reported and skipped.
pub fn dead(dir: &Path) -> Vec<Dead> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Ok(file) = File::open(&path) else { continue };
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
        let scope =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Scope>(&b).ok());
        match scope {
            Some(scope) => out.push(Dead { scope, path, _lock: lock }),
            None => {
                tracing::warn!(path = %path.display(), "not an executor registration; removing it");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(name: &str) -> Scope {
        Scope {
            instance: name.into(),
            root: PathBuf::from("/tmp/x"),
            cgroup_parent: format!("km-executor/{name}"),
            docker_owner: format!("km-executor-{name}"),
        }
    }

    #[test]
    fn a_live_registration_is_not_dead_and_a_dropped_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let live = register(dir.path(), &scope("a")).unwrap();
        let gone = register(dir.path(), &scope("b")).unwrap();
        assert!(matches!(register(dir.path(), &scope("a")), Err(RegistryError::Locked { .. })));
        drop(gone);
        let dead = dead(dir.path());
        assert_eq!(dead.iter().map(|d| d.scope.instance.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(dead[0].scope, scope("b"));
        assert!(live.path().exists());
    }

    #[test]
    fn garbage_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        assert!(dead(dir.path()).is_empty());
        assert!(!dir.path().join("junk.json").exists());
    }
}
