//! The registry: agents and frameworks as protobuf, in a file under
//! `--work_dir` (written atomically: temporary file, fsync, rename) or in etcd.
//! The loop persists it before it sends the events that announce a change
//! (an agent's REGISTERED, a framework's SUBSCRIBED), as Mesos's registrar
//! admits an agent only once the registry holds it. A write that fails stops the
//! master before it announces anything: a restarted (or standby) master goes on
//! from the last registry written.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use km_mesos::agent::Registry;
use prost::Message as _;

/// Where the registry is kept.
pub(crate) enum Store {
    /// A file under `--work_dir`.
    File(std::path::PathBuf),
    /// A key in etcd (with `--etcd_servers`), written only while this master
    /// holds the election key.
    Etcd(etcd_client::Client, String, crate::leader::ElectionKey),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::File(path) => f.debug_tuple("File").field(path).finish(),
            Store::Etcd(_, prefix, key) => f.debug_tuple("Etcd").field(prefix).field(key).finish(),
        }
    }
}

impl Store {
    /// Persists a snapshot; returns once it is durable.
    pub(crate) async fn persist(&mut self, registry: &Registry) -> anyhow::Result<()> {
        match self {
            Store::File(path) => {
                let (path, registry) = (path.clone(), registry.clone());
                tokio::task::spawn_blocking(move || store(&path, &registry))
                    .await
                    .map_err(anyhow::Error::from)?
                    .map_err(anyhow::Error::from)
            }
            Store::Etcd(client, prefix, election) => {
                crate::leader::store_registry(client, prefix, election, registry).await
            }
        }
    }
}

/// Name of the file under `--work_dir`.
pub(crate) const FILE_NAME: &str = "registry.pb";

/// Reads the registry, `None` when there is none yet.
pub(crate) fn load(path: &Path) -> anyhow::Result<Option<Registry>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the registry {}", path.display()));
        }
    };
    let registry = Registry::decode(bytes.as_slice()).with_context(|| {
        format!("the registry {} is corrupt; move it away to start empty", path.display())
    })?;
    Ok(Some(registry))
}

/// Replaces the registry file atomically.
pub(crate) fn store(path: &Path, registry: &Registry) -> std::io::Result<()> {
    let tmp = path.with_extension("pb.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&registry.encode_to_vec())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use km_mesos::v1;

    #[test]
    fn round_trips_and_reports_corruption() {
        let dir = std::env::temp_dir().join(format!("km-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        assert!(load(&path).unwrap().is_none());
        let registry = Registry {
            agents: vec![v1::AgentInfo { hostname: "h".into(), ..Default::default() }],
            frameworks: vec![],
            removed_framework_ids: vec!["gone".into()],
        };
        store(&path, &registry).unwrap();
        assert_eq!(load(&path).unwrap(), Some(registry));
        std::fs::write(&path, [0xff, 0xff]).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("corrupt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
