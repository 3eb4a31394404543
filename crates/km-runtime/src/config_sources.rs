//! ConfigMaps and Secrets of a pod, for callers that have an API server
//! (km kubelet with `--api-servers`, later the executor):
//! `env.valueFrom.configMapKeyRef` / `secretKeyRef` and `configMap` /
//! `secret` volumes, read once when the pod starts.
//!
//! [`referenced`] names what a pod needs, the caller fetches those objects
//! into [`Fetched`], and [`resolve`] (pure) rewrites the pod for the runtime:
//! env references become literal values, and each configMap or secret
//! volume becomes a hostPath volume over a directory of files the caller
//! writes ([`write_files`]) under its root directory, which every runtime
//! bind-mounts like any hostPath. `optional: true` is
//! honoured; anything else missing is a [`ConfigError`] whose message names
//! the object and key, shown as `CreateContainerConfigError` as kubelet
//! does.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as k8s;

/// What a pod refers to, by kind and name (in the pod's namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

impl Refs {
    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty() && self.secrets.is_empty()
    }
}

/// Fetched objects: name → key → bytes (`None`: the object does not exist).
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

/// A reference that cannot be satisfied; the message is kubelet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// The container that cannot start (the first, for volume errors).
    pub container: String,
    pub message: String,
}

/// Names the ConfigMaps and Secrets `pod` refers to.
pub fn referenced(pod: &k8s::Pod) -> Refs {
    let mut refs = Refs::default();
    let Some(spec) = pod.spec.as_ref() else { return refs };
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    for e in containers.flat_map(|c| c.env.iter().flatten()) {
        let Some(from) = &e.value_from else { continue };
        if let Some(k) = &from.config_map_key_ref {
            refs.config_maps.insert(k.name.clone());
        }
        if let Some(k) = &from.secret_key_ref {
            refs.secrets.insert(k.name.clone());
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            refs.config_maps.insert(c.name.clone());
        }
        if let Some(s) = &v.secret {
            refs.secrets.insert(s.secret_name.clone().unwrap_or_default());
        }
    }
    refs
}

/// A file to write for a volume: path, content, mode.
pub type VolumeFile = (PathBuf, Vec<u8>, u32);

/// The pod rewritten for the runtime, and the volume files to write first.
#[derive(Debug)]
pub struct Resolved {
    pub pod: k8s::Pod,
    /// Volume directories to create (empty ones included).
    pub dirs: Vec<PathBuf>,
    pub files: Vec<VolumeFile>,
}

/// Rewrites `pod`'s ConfigMap and Secret references with `fetched`;
/// volumes go to `<volumes_dir>/<volume name>`.
pub fn resolve(
    pod: &k8s::Pod,
    fetched: &Fetched,
    volumes_dir: &Path,
) -> Result<Resolved, ConfigError> {
    let mut pod = pod.clone();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let Some(spec) = pod.spec.as_mut() else { return Ok(Resolved { pod, dirs, files }) };
    let first = spec.containers.first().map(|c| c.name.clone()).unwrap_or_default();
    let containers = spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten());
    for c in containers {
        let Some(env) = c.env.as_mut() else { continue };
        let mut kept = Vec::with_capacity(env.len());
        for mut e in std::mem::take(env) {
            let err = |message: String| ConfigError { container: c.name.clone(), message };
            let looked_up = match e.value_from.as_ref() {
                Some(from) if from.config_map_key_ref.is_some() => {
                    let Some(k) = from.config_map_key_ref.as_ref() else { continue };
                    Some(lookup(
                        &fetched.config_maps,
                        "configmap",
                        "ConfigMap",
                        &namespace,
                        &k.name,
                        &k.key,
                        k.optional == Some(true),
                    ))
                }
                Some(from) if from.secret_key_ref.is_some() => {
                    let Some(k) = from.secret_key_ref.as_ref() else { continue };
                    Some(lookup(
                        &fetched.secrets,
                        "secret",
                        "Secret",
                        &namespace,
                        &k.name,
                        &k.key,
                        k.optional == Some(true),
                    ))
                }
                _ => None,
            };
            match looked_up {
                None => kept.push(e),
                Some(Ok(None)) => {}
                Some(Ok(Some(bytes))) => {
                    // Literal: `$` must not start a `$(VAR)` expansion.
                    e.value = Some(String::from_utf8_lossy(&bytes).replace('$', "$$"));
                    e.value_from = None;
                    kept.push(e);
                }
                Some(Err(message)) => return Err(err(message)),
            }
        }
        *env = kept;
    }
    for v in spec.volumes.iter_mut().flatten() {
        let err = |message: String| ConfigError { container: first.clone(), message };
        let (objects, kind, items, optional, name, default_mode) = if let Some(c) = &v.config_map {
            (
                &fetched.config_maps,
                "configmap",
                &c.items,
                c.optional,
                c.name.clone(),
                c.default_mode,
            )
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            (&fetched.secrets, "secret", &s.items, s.optional, name, s.default_mode)
        } else {
            continue;
        };
        let optional = optional == Some(true);
        let dir = volumes_dir.join(&v.name);
        let mode = default_mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644);
        match objects.get(&name).cloned().flatten() {
            None if optional => {}
            None => return Err(err(format!("{kind} {name:?} not found"))),
            Some(data) => match items {
                None => {
                    for (key, bytes) in data {
                        files.push((dir.join(&key), bytes, mode));
                    }
                }
                Some(items) => {
                    for item in items {
                        let path = safe_relative(&item.path).ok_or_else(|| {
                            err(format!("volume {:?}: invalid item path {:?}", v.name, item.path))
                        })?;
                        let item_mode =
                            item.mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(mode);
                        match data.get(&item.key) {
                            Some(bytes) => files.push((dir.join(path), bytes.clone(), item_mode)),
                            None if optional => {}
                            None => {
                                return Err(err(format!(
                                    "{kind} references non-existent {kind} key: {} ({namespace}/{name})",
                                    item.key
                                )));
                            }
                        }
                    }
                }
            },
        }
        dirs.push(dir.clone());
        *v = k8s::Volume {
            name: v.name.clone(),
            host_path: Some(k8s::HostPathVolumeSource {
                path: dir.display().to_string(),
                type_: None,
            }),
            ..Default::default()
        };
    }
    Ok(Resolved { pod, dirs, files })
}

/// `Ok(None)`: optional and absent; `Err`: kubelet's message.
fn lookup(
    objects: &BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    kind: &str,
    kind_title: &str,
    namespace: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<Vec<u8>>, String> {
    match objects.get(name).cloned().flatten() {
        None if optional => Ok(None),
        None => Err(format!("{kind} {name:?} not found")),
        Some(data) => match data.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(format!("couldn't find key {key} in {kind_title} {namespace}/{name}")),
        },
    }
}

/// A relative path without `..` components.
fn safe_relative(p: &str) -> Option<&Path> {
    let path = Path::new(p);
    let ok =
        !p.is_empty() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    ok.then_some(path)
}

/// Creates the volume directories and writes the files.
pub fn write_files(resolved: &Resolved) -> std::io::Result<()> {
    for d in &resolved.dirs {
        std::fs::create_dir_all(d)?;
    }
    for (path, bytes, mode) in &resolved.files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// The status of a pod whose containers cannot be configured: Pending,
/// every container waiting with `CreateContainerConfigError`.
pub fn config_error_status(pod: &k8s::Pod, error: &ConfigError, host_ip: &str) -> k8s::PodStatus {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let statuses = containers
        .iter()
        .map(|c| k8s::ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: false,
            restart_count: 0,
            started: Some(false),
            state: Some(k8s::ContainerState {
                waiting: Some(k8s::ContainerStateWaiting {
                    reason: Some("CreateContainerConfigError".into()),
                    message: Some(error.message.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    k8s::PodStatus {
        phase: Some("Pending".into()),
        host_ip: Some(host_ip.to_owned()),
        conditions: Some(vec![k8s::PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("ContainersNotReady".into()),
            ..Default::default()
        }]),
        container_statuses: Some(statuses),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> k8s::Pod {
        serde_json::from_value(v).expect("pod")
    }

    fn sample() -> k8s::Pod {
        pod(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{"name": "c", "env": [
                    {"name": "A", "value": "x"},
                    {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "greeting"}}},
                    {"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                    {"name": "O", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}}
                ]}],
                "volumes": [
                    {"name": "sv", "secret": {"secretName": "s"}},
                    {"name": "cv", "configMap": {"name": "cm", "items": [{"key": "greeting", "path": "sub/g.txt"}]}},
                    {"name": "ov", "configMap": {"name": "gone", "optional": true}},
                    {"name": "e", "emptyDir": {}}
                ]
            }
        }))
    }

    fn fetched() -> Fetched {
        let mut f = Fetched::default();
        f.config_maps.insert(
            "cm".into(),
            Some(BTreeMap::from([("greeting".to_owned(), b"hi $(A)".to_vec())])),
        );
        f.config_maps.insert("gone".into(), None);
        f.secrets.insert("s".into(), Some(BTreeMap::from([("pw".to_owned(), b"pass".to_vec())])));
        f.secrets.insert("gone".into(), None);
        f
    }

    #[test]
    fn references_are_named() {
        let r = referenced(&sample());
        assert_eq!(r.config_maps, BTreeSet::from(["cm".to_owned(), "gone".to_owned()]));
        assert_eq!(r.secrets, BTreeSet::from(["s".to_owned(), "gone".to_owned()]));
        assert!(referenced(&pod(json!({"spec": {"containers": [{"name": "c"}]}}))).is_empty());
    }

    #[test]
    fn env_and_volumes_are_resolved() {
        let r = resolve(&sample(), &fetched(), Path::new("/v")).expect("resolve");
        let spec = r.pod.spec.as_ref().expect("spec");
        let env: Vec<_> = spec.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref(), e.value_from.is_some()))
            .collect();
        assert_eq!(
            env,
            [("A", Some("x"), false), ("G", Some("hi $$(A)"), false), ("P", Some("pass"), false)],
            "values are literal, the optional missing one is left out"
        );
        let vols = spec.volumes.as_ref().expect("volumes");
        assert_eq!(vols[0].host_path.as_ref().map(|h| h.path.as_str()), Some("/v/sv"));
        assert!(vols[0].secret.is_none());
        assert_eq!(vols[2].host_path.as_ref().map(|h| h.path.as_str()), Some("/v/ov"));
        assert!(vols[3].empty_dir.is_some(), "other volumes are untouched");
        assert_eq!(
            r.files,
            [
                (PathBuf::from("/v/sv/pw"), b"pass".to_vec(), 0o644),
                (PathBuf::from("/v/cv/sub/g.txt"), b"hi $(A)".to_vec(), 0o644),
            ]
        );
        assert_eq!(r.dirs.len(), 3);
    }

    #[test]
    fn missing_objects_and_keys_name_them() {
        let mut f = fetched();
        f.config_maps.insert("cm".into(), None);
        let e = resolve(&sample(), &f, Path::new("/v")).expect_err("missing configmap");
        assert_eq!(e.message, r#"configmap "cm" not found"#);
        assert_eq!(e.container, "c");

        let mut f = fetched();
        f.secrets.insert("s".into(), Some(BTreeMap::new()));
        let e = resolve(&sample(), &f, Path::new("/v")).expect_err("missing key");
        assert_eq!(e.message, "couldn't find key pw in Secret ns/s");

        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c"}],
            "volumes": [{"name": "v", "configMap": {"name": "cm", "items": [{"key": "nokey", "path": "x"}]}}]
        }}));
        let e = resolve(&p, &fetched(), Path::new("/v")).expect_err("missing item key");
        assert!(e.message.contains("nokey") && e.message.contains("default/cm"), "{}", e.message);

        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c"}],
            "volumes": [{"name": "v", "configMap": {"name": "cm", "items": [{"key": "greeting", "path": "../x"}]}}]
        }}));
        assert!(resolve(&p, &fetched(), Path::new("/v")).is_err(), "paths stay in the volume");
    }

    #[test]
    fn config_errors_become_a_waiting_status() {
        let e =
            ConfigError { container: "c".into(), message: r#"configmap "cm" not found"#.into() };
        let st = config_error_status(&sample(), &e, "10.0.0.1");
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let cs = &st.container_statuses.expect("statuses")[0];
        let w = cs.state.as_ref().and_then(|s| s.waiting.as_ref()).expect("waiting");
        assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
        assert_eq!(w.message.as_deref(), Some(r#"configmap "cm" not found"#));
    }
}
