//! Cgroups for native containers, through the cgroupfs files directly.
//!
//! Layout: `<mount>/<parent>/<sandbox>/<container>` where `<parent>` is the
//! runtime's cgroup parent (`km` by default). Under cgroup v1 the same path
//! is created in the `cpu`, `memory` and `pids` hierarchies; under v2 in the
//! unified one, with the controllers enabled on the way down.
//! Limits: CPU as a CFS quota over a 100 ms period, memory as a hard limit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::pod::Limits;

const CFS_PERIOD_US: u64 = 100_000;
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

/// Which cgroup hierarchy the host uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// The cgroup tree of one native runtime.
#[derive(Clone, Debug)]
pub(crate) struct Cgroups {
    mount: PathBuf,
    version: Version,
    parent: String,
}

impl Cgroups {
    /// Detects the layout under `/sys/fs/cgroup`.
    pub(crate) fn detect(parent: &str) -> Result<Cgroups> {
        let mount = PathBuf::from("/sys/fs/cgroup");
        let version = if mount.join("memory").is_dir() {
            Version::V1
        } else if mount.join("cgroup.controllers").is_file() {
            Version::V2
        } else {
            return Err(Error::Other(format!(
                "no cgroup v1 or v2 hierarchy found under {}",
                mount.display()
            )));
        };
        Ok(Cgroups { mount, version, parent: parent.trim_matches('/').to_owned() })
    }

    pub(crate) fn version(&self) -> &Version {
        &self.version
    }

    /// The directories (one per hierarchy) of `rel` under the parent.
    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        match self.version {
            Version::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| self.mount.join(c))
                .filter(|d| d.is_dir())
                .map(|d| d.join(&self.parent).join(rel))
                .collect(),
            Version::V2 => vec![self.mount.join(&self.parent).join(rel)],
        }
    }

    /// The `cgroup.procs` files of the container cgroup `sandbox/container`.
    pub(crate) fn procs(&self, sandbox: &str, container: &str) -> Vec<PathBuf> {
        self.dirs(&format!("{sandbox}/{container}"))
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Creates the container cgroup `sandbox/container` with `limits`;
    /// returns the `cgroup.procs` files to write the process into.
    pub(crate) fn create(
        &self,
        sandbox: &str,
        container: &str,
        limits: Limits,
    ) -> Result<Vec<PathBuf>> {
        let rel = format!("{sandbox}/{container}");
        if self.version == Version::V2 {
            self.enable_v2_controllers(sandbox)?;
        }
        let mut procs = Vec::new();
        for dir in self.dirs(&rel) {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            self.write_limits(&dir, limits)?;
            procs.push(dir.join("cgroup.procs"));
        }
        Ok(procs)
    }

    /// Cgroup v2: the cgroups from the hierarchy root down to the sandbox,
    /// each of which must enable the controllers for its children, because
    /// a controller is only available where every ancestor delegates it.
    fn v2_levels(&self, sandbox: &str) -> Vec<PathBuf> {
        let mut levels = vec![self.mount.clone()];
        let parts =
            self.parent.split('/').filter(|p| !p.is_empty()).chain(std::iter::once(sandbox));
        for part in parts {
            let next = levels[levels.len() - 1].join(part);
            levels.push(next);
        }
        levels
    }

    fn enable_v2_controllers(&self, sandbox: &str) -> Result<()> {
        for (i, dir) in self.v2_levels(sandbox).iter().enumerate() {
            if i > 0 {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let control = dir.join("cgroup.subtree_control");
            let current = std::fs::read_to_string(&control).unwrap_or_default();
            for ctl in ["cpu", "memory", "pids"] {
                if !current.split_whitespace().any(|c| c == ctl) {
                    // A controller the kernel does not offer, or one that
                    // cannot be enabled here, is skipped: its limits are then
                    // reported missing by `write_limits`.
                    let _ = std::fs::write(&control, format!("+{ctl}"));
                }
            }
        }
        Ok(())
    }

    fn write_limits(&self, dir: &Path, limits: Limits) -> Result<()> {
        // Cgroup v1 has one hierarchy per controller: each limit file goes
        // only into its own controller's directory (`memory.*` under memory).
        let controller = match self.version {
            Version::V1 => {
                V1_CONTROLLERS.iter().find(|c| dir.starts_with(self.mount.join(c))).copied()
            }
            Version::V2 => None,
        };
        for (file, value) in limit_files(&self.version, limits) {
            if let Some(c) = controller
                && file.split('.').next() != Some(c)
            {
                continue;
            }
            let path = dir.join(file);
            if path.exists() {
                std::fs::write(&path, value).map_err(|e| Error::io(&path, e))?;
            } else {
                tracing::warn!(path = %path.display(), "cgroup controller unavailable; limit not applied");
            }
        }
        Ok(())
    }

    /// Whether the container's cgroup recorded an OOM kill.
    pub(crate) fn oom_killed(&self, sandbox: &str, container: &str) -> bool {
        let rel = format!("{sandbox}/{container}");
        let file = match self.version {
            Version::V1 => {
                self.mount.join("memory").join(&self.parent).join(&rel).join("memory.oom_control")
            }
            Version::V2 => self.mount.join(&self.parent).join(&rel).join("memory.events"),
        };
        std::fs::read_to_string(file).is_ok_and(|s| {
            s.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    }

    /// Memory limit file of a container cgroup, for tests.
    pub(crate) fn memory_limit(&self, sandbox: &str, container: &str) -> Option<u64> {
        let rel = format!("{sandbox}/{container}");
        let file = match self.version {
            Version::V1 => self
                .mount
                .join("memory")
                .join(&self.parent)
                .join(&rel)
                .join("memory.limit_in_bytes"),
            Version::V2 => self.mount.join(&self.parent).join(&rel).join("memory.max"),
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// Kills every process left in the sandbox's cgroups and removes them.
    pub(crate) fn remove_sandbox(&self, sandbox: &str) -> Result<()> {
        for dir in self.dirs(sandbox) {
            remove_tree(&dir)?;
        }
        Ok(())
    }

    /// Names of the sandboxes that have a cgroup under the parent.
    pub(crate) fn sandboxes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .dirs("")
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|rd| rd.flatten())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Removes the (empty) parent cgroup itself; used by tests.
    pub(crate) fn remove_parent(&self) -> Result<()> {
        for dir in self.dirs("") {
            remove_tree(&dir)?;
        }
        Ok(())
    }
}

/// The cgroupfs files and values that set `limits`: CPU as a CFS quota
/// over a 100 ms period (at least 1 ms), memory as a hard limit.
fn limit_files(version: &Version, limits: Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let quota = limits.cpu_millis.map(|c| (c * CFS_PERIOD_US / 1000).max(1000));
    match version {
        Version::V1 => {
            if let Some(m) = limits.memory_bytes {
                out.push(("memory.limit_in_bytes", m.to_string()));
            }
            if let Some(q) = quota {
                out.push(("cpu.cfs_period_us", CFS_PERIOD_US.to_string()));
                out.push(("cpu.cfs_quota_us", q.to_string()));
            }
        }
        Version::V2 => {
            if let Some(m) = limits.memory_bytes {
                out.push(("memory.max", m.to_string()));
            }
            if let Some(q) = quota {
                out.push(("cpu.max", format!("{q} {CFS_PERIOD_US}")));
            }
        }
    }
    out
}

/// Kills the processes in `dir` and below, then removes the directories
/// bottom-up. A directory that does not exist is fine.
fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let children: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    for child in children {
        remove_tree(&child)?;
    }
    let procs = dir.join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!("processes in {} do not die", dir.display())));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // rmdir can fail with EBUSY for a moment after the last process exits.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(Error::io(dir, e)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_to_the_files_of_each_version() {
        let l = Limits { cpu_millis: Some(250), memory_bytes: Some(64 << 20) };
        assert_eq!(
            limit_files(&Version::V1, l),
            vec![
                ("memory.limit_in_bytes", (64u64 << 20).to_string()),
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "25000".into()),
            ]
        );
        assert_eq!(
            limit_files(&Version::V2, l),
            vec![("memory.max", (64u64 << 20).to_string()), ("cpu.max", "25000 100000".into())]
        );
        let tiny = Limits { cpu_millis: Some(1), memory_bytes: None };
        assert_eq!(limit_files(&Version::V2, tiny), vec![("cpu.max", "1000 100000".into())]);
        assert!(limit_files(&Version::V1, Limits::default()).is_empty());
    }

    #[test]
    fn v2_enables_controllers_from_the_root_down_to_the_sandbox() {
        let cg = Cgroups {
            mount: PathBuf::from("/sys/fs/cgroup"),
            version: Version::V2,
            parent: "km/node".into(),
        };
        assert_eq!(
            cg.v2_levels("sb"),
            vec![
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/sys/fs/cgroup/km"),
                PathBuf::from("/sys/fs/cgroup/km/node"),
                PathBuf::from("/sys/fs/cgroup/km/node/sb"),
            ]
        );
    }
}
