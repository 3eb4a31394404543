//! `--static-pods-config`: pod manifests every executor runs beside the scheduled pods.
//!
//! The directory's `*.yaml`, `*.yml` and `*.json` files are read in name order, each holding one
//! pod. Each pod is marked with the file it came from (annotation
//! `k8s.mesosphere.io/staticPodFilename`); the list travels gzipped as a v1 `PodList` in
//! `ExecutorInfo.data`, and what the pods request is added to every executor's resources.
//! The directory is watched: a change reaches every executor started afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use k8s_openapi::api::core::v1::Pod;
use km_offer_matcher::{Matcher, Scalars};

/// Annotation naming the manifest file of a static pod.
pub(crate) const FILENAME_ANNOTATION: &str = "k8s.mesosphere.io/staticPodFilename";

/// The static pods of a directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StaticPods {
    /// Gzipped v1 PodList JSON; `None` when there are no pods.
    pub(crate) data: Option<Vec<u8>>,
    /// What the pods need, added to the executor's resources.
    pub(crate) resources: Scalars,
    /// Pod names, in order.
    pub(crate) names: Vec<String>,
    /// A digest of the files read (to notice changes).
    pub(crate) fingerprint: u64,
}

/// A static pod directory that cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StaticPodError {
    /// The directory or a file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a pod.
    #[error("{path}: {problem}")]
    Invalid {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The manifest files of `dir`, sorted, with their contents.
fn manifests(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, StaticPodError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| StaticPodError::Read { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(read_err(&p))?;
            Ok((p, bytes))
        })
        .collect()
}

/// A digest of the directory's manifests (names and contents).
pub(crate) fn fingerprint(dir: &Path) -> Result<u64, StaticPodError> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (p, bytes) in manifests(dir)? {
        p.hash(&mut h);
        bytes.hash(&mut h);
    }
    Ok(h.finish())
}

/// Reads, checks and packs the static pods of `dir`.
pub(crate) fn load(dir: &Path, matcher: &Matcher) -> Result<StaticPods, StaticPodError> {
    let files = manifests(dir)?;
    let mut pods: Vec<Pod> = Vec::with_capacity(files.len());
    let mut resources = Scalars::ZERO;
    let mut names = Vec::new();
    for (path, bytes) in &files {
        let invalid = |problem: String| StaticPodError::Invalid { path: path.clone(), problem };
        let mut pod: Pod =
            serde_yaml_ng::from_slice(bytes).map_err(|e| invalid(format!("not a pod: {e}")))?;
        let name = pod
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("the pod has no metadata.name".into()))?;
        if pod.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
            return Err(invalid("the pod has no containers".into()));
        }
        if names.contains(&name) {
            return Err(invalid(format!("a second pod named {name:?}")));
        }
        pod.metadata.namespace.get_or_insert_with(|| "default".to_owned());
        let filename = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(FILENAME_ANNOTATION.to_owned(), filename);
        let demand = matcher.demand(&pod).map_err(|e| invalid(e.to_string()))?;
        resources = resources.plus(&demand.resources);
        names.push(name);
        pods.push(pod);
    }
    let fingerprint = fingerprint(dir)?;
    if pods.is_empty() {
        return Ok(StaticPods { data: None, resources, names, fingerprint });
    }
    let list =
        serde_json::json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods });
    let json = serde_json::to_vec(&list).map_err(|e| StaticPodError::Invalid {
        path: dir.to_owned(),
        problem: format!("cannot encode the pod list: {e}"),
    })?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let packed = gz
        .write_all(&json)
        .and_then(|()| gz.finish())
        .map_err(|source| StaticPodError::Read { path: dir.to_owned(), source })?;
    Ok(StaticPods { data: Some(packed), resources, names, fingerprint })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use km_offer_matcher::{Config, Scalar, ScalarKind};

    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: logger\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests:\n        cpu: 100m\n        memory: 32Mi\n";

    #[test]
    fn packs_the_pods_and_sums_their_resources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POD).unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"{"metadata":{"name":"other"},"spec":{"containers":[{"name":"c","image":"x"}]}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let m = Matcher::new(Config::default()).unwrap();
        let s = load(dir.path(), &m).unwrap();
        assert_eq!(s.names, vec!["logger", "other"]);
        // 100m + the default 250m for the container that asks nothing.
        assert_eq!(s.resources.get(ScalarKind::Cpus), Scalar::from_milli(350));
        assert_eq!(s.resources.get(ScalarKind::Mem), Scalar::from_units(32 + 64));
        let mut json = String::new();
        flate2::read::GzDecoder::new(&s.data.unwrap()[..]).read_to_string(&mut json).unwrap();
        let list: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["items"][0]["metadata"]["annotations"][FILENAME_ANNOTATION], "a.yaml");
        assert_eq!(list["items"][1]["metadata"]["namespace"], "default");
    }

    #[test]
    fn changes_change_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let before = fingerprint(dir.path()).unwrap();
        std::fs::write(dir.path().join("a.yaml"), POD).unwrap();
        let after = fingerprint(dir.path()).unwrap();
        assert_ne!(before, after);
        assert_eq!(after, fingerprint(dir.path()).unwrap());
        let m = Matcher::new(Config::default()).unwrap();
        assert_eq!(load(dir.path(), &m).unwrap().fingerprint, after);
        let empty = tempfile::tempdir().unwrap();
        let s = load(empty.path(), &m).unwrap();
        assert!(s.data.is_none());
        assert!(s.resources.is_zero());
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "metadata: [").unwrap();
        let m = Matcher::new(Config::default()).unwrap();
        let e = load(dir.path(), &m).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("not a pod"), "{e}");
        std::fs::write(
            dir.path().join("bad.yaml"),
            "metadata:\n  name: x\nspec:\n  containers: []\n",
        )
        .unwrap();
        let e = load(dir.path(), &m).unwrap_err().to_string();
        assert!(e.contains("no containers"), "{e}");
        std::fs::write(
            dir.path().join("bad.yaml"),
            "metadata:\n  name: x\nspec:\n  containers:\n  - name: c\n    resources:\n      requests:\n        cpu: lots\n",
        )
        .unwrap();
        let e = load(dir.path(), &m).unwrap_err().to_string();
        assert!(e.contains("bad.yaml"), "{e}");
    }
}
