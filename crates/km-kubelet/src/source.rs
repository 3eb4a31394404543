//! The manifest-directory pod source: reads every pod manifest (YAML or
//! JSON) in a directory, gives each the identity kubelet gives static pods
//! (name suffixed with the node name, a uid hashed from file, content and
//! node), and diffs successive reads into pods to start and stop.
//!
//! Reading is separate from acting: [`scan`] returns what the directory
//! holds, [`diff`] compares two scans, so both are tested without a
//! runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as k8s;
use sha2::{Digest, Sha256};

/// Annotation kubelet puts on static pods: where they came from.
pub const ANNOTATION_CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// Annotation kubelet puts on static pods: the hash that is their uid.
pub const ANNOTATION_CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// Annotation naming the manifest file (as k8sm's executor did).
pub const ANNOTATION_FILENAME: &str = "k8s.mesosphere.io/staticPodFilename";

/// One file of the directory.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A pod, ready to run.
    Pod { hash: String, pod: Box<k8s::Pod> },
    /// A file that is not a valid pod manifest.
    Bad { hash: String, error: String },
}

impl Entry {
    pub fn hash(&self) -> &str {
        match self {
            Entry::Pod { hash, .. } | Entry::Bad { hash, .. } => hash,
        }
    }
}

/// What the directory held at one moment, by path.
pub type Scan = BTreeMap<PathBuf, Entry>;

/// Error reading the directory itself.
#[derive(Debug, thiserror::Error)]
#[error("reading manifest directory {path}: {source}")]
pub struct ScanError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Reads every regular, non-hidden file of `dir`. Files that cannot be
/// read or parsed become [`Entry::Bad`]; they do not stop the others.
pub fn scan(dir: &Path, node_name: &str) -> Result<Scan, ScanError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ScanError { path: dir.to_owned(), source })?;
    let mut out = Scan::new();
    for entry in rd.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden || !path.is_file() {
            continue;
        }
        let entry = match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes, node_name),
            Err(e) => Entry::Bad { hash: String::new(), error: e.to_string() },
        };
        out.insert(path, entry);
    }
    Ok(out)
}

/// Parses one manifest and gives the pod its static-pod identity.
pub fn parse(path: &Path, bytes: &[u8], node_name: &str) -> Entry {
    let mut h = Sha256::new();
    h.update(path.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(node_name.as_bytes());
    h.update([0]);
    h.update(bytes);
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let hash = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );

    let text = String::from_utf8_lossy(bytes);
    let looks_json = text.trim_start().starts_with('{');
    let parsed: Result<k8s::Pod, String> = if looks_json {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON pod manifest: {e}"))
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| format!("invalid YAML pod manifest: {e}"))
    };
    let mut pod = match parsed {
        Ok(p) => p,
        Err(error) => return Entry::Bad { hash, error },
    };
    let Some(name) = pod.metadata.name.clone().filter(|n| !n.is_empty()) else {
        return Entry::Bad { hash, error: "metadata.name is required".into() };
    };
    if pod.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
        return Entry::Bad { hash, error: "spec.containers must not be empty".into() };
    }
    pod.metadata.name = Some(format!("{name}-{node_name}"));
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace = Some("default".into());
    }
    pod.metadata.uid = Some(hash.clone());
    let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(ANNOTATION_CONFIG_SOURCE.into(), "file".into());
    ann.insert(ANNOTATION_CONFIG_HASH.into(), hash.clone());
    if let Some(f) = path.file_name() {
        ann.insert(ANNOTATION_FILENAME.into(), f.to_string_lossy().into_owned());
    }
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_owned());
    }
    Entry::Pod { hash, pod: Box::new(pod) }
}

/// What changed between two scans.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Paths whose pod must be started (new or changed files).
    pub start: Vec<PathBuf>,
    /// Paths whose old pod must be stopped (changed, broken or removed).
    pub stop: Vec<PathBuf>,
    /// Paths that are new or changed and bad: report them.
    pub report: Vec<PathBuf>,
}

/// Compares the previous scan with the current one.
pub fn diff(old: &Scan, new: &Scan) -> Diff {
    let mut d = Diff::default();
    for (path, entry) in old {
        let same = new.get(path).is_some_and(|n| n.hash() == entry.hash());
        if !same && matches!(entry, Entry::Pod { .. }) {
            d.stop.push(path.clone());
        }
    }
    for (path, entry) in new {
        let same = old.get(path).is_some_and(|o| o.hash() == entry.hash());
        if same {
            continue;
        }
        match entry {
            Entry::Pod { .. } => d.start.push(path.clone()),
            Entry::Bad { .. } => d.report.push(path.clone()),
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: x:1\n";

    #[test]
    fn yaml_and_json_manifests_become_static_pods() {
        let e = parse(Path::new("/m/web.yaml"), POD.as_bytes(), "node1");
        let Entry::Pod { hash, pod } = e else { panic!("expected a pod") };
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(pod.metadata.uid.as_deref(), Some(hash.as_str()));
        assert_eq!(pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("node1"));
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j","namespace":"kube-system"},
                       "spec":{"containers":[{"name":"c","image":"x:1"}]}}"#;
        let Entry::Pod { pod, .. } = parse(Path::new("/m/j.json"), json.as_bytes(), "node1") else {
            panic!("expected a pod")
        };
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
    }

    #[test]
    fn bad_manifests_say_why() {
        let Entry::Bad { error, .. } =
            parse(Path::new("/m/x.yaml"), b"kind: Pod\nmetadata: [\n", "n")
        else {
            panic!("expected an error")
        };
        assert!(error.contains("invalid YAML"), "{error}");
        let Entry::Bad { error, .. } = parse(
            Path::new("/m/x.yaml"),
            b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers: []\n",
            "n",
        ) else {
            panic!("expected an error")
        };
        assert!(error.contains("containers"), "{error}");
    }

    #[test]
    fn uid_changes_with_content_path_and_node() {
        let a = parse(Path::new("/m/a.yaml"), POD.as_bytes(), "n1");
        let b = parse(Path::new("/m/a.yaml"), POD.as_bytes(), "n1");
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), parse(Path::new("/m/b.yaml"), POD.as_bytes(), "n1").hash());
        assert_ne!(a.hash(), parse(Path::new("/m/a.yaml"), POD.as_bytes(), "n2").hash());
        let changed = POD.replace("x:1", "x:2");
        assert_ne!(a.hash(), parse(Path::new("/m/a.yaml"), changed.as_bytes(), "n1").hash());
    }

    #[test]
    fn diff_starts_stops_and_reports() {
        let p = |s: &str| PathBuf::from(s);
        let pod = |content: &str| parse(Path::new("/m/x"), content.as_bytes(), "n");
        let mut old = Scan::new();
        old.insert(p("/m/keep"), pod(POD));
        old.insert(p("/m/change"), pod(POD));
        old.insert(p("/m/remove"), pod(POD));
        old.insert(p("/m/break"), pod(POD));
        let mut new = Scan::new();
        new.insert(p("/m/keep"), pod(POD));
        new.insert(p("/m/change"), pod(&POD.replace("x:1", "x:2")));
        new.insert(p("/m/break"), Entry::Bad { hash: "h".into(), error: "e".into() });
        new.insert(p("/m/add"), pod(&POD.replace("web", "other")));
        let d = diff(&old, &new);
        assert_eq!(d.start, vec![p("/m/add"), p("/m/change")]);
        assert_eq!(d.stop, vec![p("/m/break"), p("/m/change"), p("/m/remove")]);
        assert_eq!(d.report, vec![p("/m/break")]);
        assert_eq!(diff(&new, &new), Diff::default());
    }
}
