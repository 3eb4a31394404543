//! Restart on configuration change, the pure part: which ConfigMaps and Secrets a workload
//! uses, the hash of their contents it records, and what a change of that hash calls for.
//!
//! A workload or pod annotated `km.io/restart-on-config-change: "true"` watches every ConfigMap
//! and Secret its pod spec uses (env, envFrom, volumes, projected volumes); a list of names
//! (`"app-config, secret/db"`) watches just those. The record, `km.io/config-hash` on the
//! object, is one short hash per source (`configmap/app-config=0f3a…,secret/db=absent`): a
//! truncated SHA-256 of the source's keys and of SHA-256 digests of their values, so it says
//! which source changed and never holds a value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::PodSpec;
use sha2::{Digest as _, Sha256};

/// The opt-in annotation.
pub const ANNOTATION: &str = "km.io/restart-on-config-change";
/// The record of the watched sources' hashes, on the object (and, once a change rolled a
/// workload, in its pod template).
pub const HASH: &str = "km.io/config-hash";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

impl SourceKind {
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        }
    }
}

/// A ConfigMap or Secret of the workload's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    pub kind: SourceKind,
    pub name: String,
}

impl Source {
    pub fn configmap(name: &str) -> Source {
        Source { kind: SourceKind::ConfigMap, name: name.to_owned() }
    }

    pub fn secret(name: &str) -> Source {
        Source { kind: SourceKind::Secret, name: name.to_owned() }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SourceKind::ConfigMap => write!(f, "configmap/{}", self.name),
            SourceKind::Secret => write!(f, "secret/{}", self.name),
        }
    }
}

/// The ConfigMaps and Secrets a pod spec uses.
pub fn references(spec: &PodSpec) -> BTreeSet<Source> {
    let mut out = BTreeSet::new();
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    for c in containers {
        for e in c.env.iter().flatten() {
            let Some(from) = e.value_from.as_ref() else { continue };
            if let Some(r) = &from.config_map_key_ref {
                out.insert(Source::configmap(&r.name));
            }
            if let Some(r) = &from.secret_key_ref {
                out.insert(Source::secret(&r.name));
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                out.insert(Source::configmap(&r.name));
            }
            if let Some(r) = &e.secret_ref {
                out.insert(Source::secret(&r.name));
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            out.insert(Source::configmap(&cm.name));
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            out.insert(Source::secret(s));
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &p.config_map {
                out.insert(Source::configmap(&cm.name));
            }
            if let Some(s) = &p.secret {
                out.insert(Source::secret(&s.name));
            }
        }
    }
    out.retain(|s| !s.name.is_empty());
    out
}

/// What the annotation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Every source the pod spec uses.
    All,
    /// These names: with a kind, that source; without, the used sources of that name (both
    /// kinds when the spec uses neither).
    Names(Vec<(Option<SourceKind>, String)>),
}

/// Reads the annotation: absent, empty or "false" is off (`None`); "true" is all; otherwise a
/// comma-separated list of `NAME`, `configmap/NAME` or `secret/NAME`.
pub fn parse_watch(value: Option<&str>) -> Result<Option<Watch>, String> {
    let Some(v) = value.map(str::trim) else { return Ok(None) };
    if v.is_empty() || v.eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    if v.eq_ignore_ascii_case("true") {
        return Ok(Some(Watch::All));
    }
    let mut names = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kind, name) = match item.split_once('/') {
            Some((k, n)) => match k.to_ascii_lowercase().as_str() {
                "configmap" | "configmaps" | "cm" => (Some(SourceKind::ConfigMap), n),
                "secret" | "secrets" => (Some(SourceKind::Secret), n),
                other => {
                    return Err(format!(
                        "{ANNOTATION}: {other:?} in {item:?} is neither configmap nor secret"
                    ));
                }
            },
            None => (None, item),
        };
        if name.is_empty() || name.contains('/') {
            return Err(format!("{ANNOTATION}: {item:?} is not a name"));
        }
        names.push((kind, name.to_owned()));
    }
    if names.is_empty() {
        return Err(format!("{ANNOTATION}: {v:?} names nothing (give \"true\" or names)"));
    }
    Ok(Some(Watch::Names(names)))
}

/// The sources a workload watches.
pub fn watched(watch: &Watch, used: &BTreeSet<Source>) -> BTreeSet<Source> {
    match watch {
        Watch::All => used.clone(),
        Watch::Names(names) => {
            let mut out = BTreeSet::new();
            for (kind, name) in names {
                match kind {
                    Some(k) => {
                        out.insert(Source { kind: *k, name: name.clone() });
                    }
                    None => {
                        let matching: Vec<&Source> =
                            used.iter().filter(|s| s.name == *name).collect();
                        if matching.is_empty() {
                            out.insert(Source::configmap(name));
                            out.insert(Source::secret(name));
                        } else {
                            out.extend(matching.into_iter().cloned());
                        }
                    }
                }
            }
            out
        }
    }
}

/// One source's contents as digests: key → SHA-256 of the value. Only these are kept, never a
/// value.
pub type Digests = BTreeMap<String, [u8; 32]>;

/// The digests of a source's entries.
pub fn digests<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Digests {
    entries.into_iter().map(|(k, v)| (k.to_owned(), Sha256::digest(v).into())).collect()
}

/// The keys whose values differ between two versions of a source (added and removed too).
pub fn changed_keys(before: &Digests, after: &Digests) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter().filter(|k| before.get(*k) != after.get(*k)).cloned().collect()
}

/// A source's short hash (16 hex digits), or "absent".
pub fn source_hash(d: Option<&Digests>) -> String {
    let Some(d) = d else { return "absent".to_owned() };
    let mut h = Sha256::new();
    for (k, v) in d {
        h.update(u64::try_from(k.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(k.as_bytes());
        h.update(v);
    }
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The record for `sources`, each looked up with `digests_of`.
pub fn record<'a>(
    sources: &BTreeSet<Source>,
    digests_of: impl Fn(&Source) -> Option<&'a Digests>,
) -> String {
    sources
        .iter()
        .map(|s| format!("{s}={}", source_hash(digests_of(s))))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_record(r: &str) -> BTreeMap<&str, &str> {
    r.split(',').filter(|s| !s.is_empty()).filter_map(|e| e.split_once('=')).collect()
}

/// The sources whose hash differs between two records (including sources only one has).
pub fn changed_sources(recorded: &str, current: &str) -> Vec<String> {
    let (a, b) = (parse_record(recorded), parse_record(current));
    let names: BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    names.into_iter().filter(|n| a.get(n) != b.get(n)).map(str::to_owned).collect()
}

/// What a workload's record calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The record is current.
    Nothing,
    /// No record yet (first sight, or the annotation was just added): write it, restart nothing.
    Record(String),
    /// The watched contents changed: write the record and restart; `sources` changed.
    Restart { record: String, sources: Vec<String> },
}

/// Compares the recorded hashes with the current ones. Only a change of content restarts: a
/// source that stops being watched (the spec or the annotation changed) is recorded away
/// without a restart, since the change that dropped it rolls the workload by itself if it
/// touched the pod template.
pub fn decide(recorded: Option<&str>, current: String) -> Decision {
    let Some(recorded) = recorded else { return Decision::Record(current) };
    if recorded == current {
        return Decision::Nothing;
    }
    let before = parse_record(recorded);
    let now = parse_record(&current);
    let sources: Vec<String> = now
        .iter()
        .filter(|(name, hash)| before.get(*name).is_some_and(|h| h != *hash))
        .map(|(name, _)| (*name).to_owned())
        .collect();
    if sources.is_empty() {
        Decision::Record(current)
    } else {
        Decision::Restart { record: current, sources }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_cover_env_env_from_and_volumes() {
        let spec: PodSpec = serde_json::from_value(json!({
            "initContainers": [{ "name": "i", "envFrom": [{ "secretRef": { "name": "init-secret" } }] }],
            "containers": [{ "name": "c",
                "env": [
                    { "name": "A", "valueFrom": { "configMapKeyRef": { "name": "cm-a", "key": "k" } } },
                    { "name": "B", "valueFrom": { "secretKeyRef": { "name": "s-b", "key": "k" } } },
                    { "name": "C", "value": "plain" },
                    { "name": "D", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                ],
                "envFrom": [{ "configMapRef": { "name": "cm-from" } }] }],
            "volumes": [
                { "name": "v1", "configMap": { "name": "cm-vol" } },
                { "name": "v2", "secret": { "secretName": "s-vol" } },
                { "name": "v3", "projected": { "sources": [
                    { "configMap": { "name": "cm-proj" } }, { "secret": { "name": "s-proj" } },
                    { "downwardAPI": { "items": [] } } ] } },
                { "name": "v4", "emptyDir": {} },
            ],
        }))
        .expect("spec");
        let names: Vec<String> = references(&spec).iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "configmap/cm-a",
                "configmap/cm-from",
                "configmap/cm-proj",
                "configmap/cm-vol",
                "secret/init-secret",
                "secret/s-b",
                "secret/s-proj",
                "secret/s-vol"
            ]
        );
    }

    #[test]
    fn the_annotation_parses_and_selects() {
        assert_eq!(parse_watch(None), Ok(None));
        assert_eq!(parse_watch(Some("false")), Ok(None));
        assert_eq!(parse_watch(Some(" TRUE ")), Ok(Some(Watch::All)));
        let w = parse_watch(Some("app, secret/db,configmap/extra")).expect("names").expect("on");
        let used: BTreeSet<Source> =
            [Source::configmap("app"), Source::secret("db"), Source::configmap("other")].into();
        let names: Vec<String> = watched(&w, &used).iter().map(ToString::to_string).collect();
        assert_eq!(names, ["configmap/app", "configmap/extra", "secret/db"]);
        let w = parse_watch(Some("unused")).expect("names").expect("on");
        let names: Vec<String> = watched(&w, &used).iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["configmap/unused", "secret/unused"],
            "a bare name not used: both kinds"
        );
        assert!(
            parse_watch(Some("job/x"))
                .expect_err("bad kind")
                .contains("neither configmap nor secret")
        );
        assert!(parse_watch(Some(" , ")).is_err());
        assert!(parse_watch(Some("secret/")).is_err());
    }

    #[test]
    fn hashes_follow_content_and_name_the_changed_source() {
        let a = digests([("k", b"v1".as_slice()), ("other", b"x".as_slice())]);
        let b = digests([("k", b"v2".as_slice()), ("other", b"x".as_slice())]);
        assert_eq!(changed_keys(&a, &b), ["k"]);
        assert_eq!(changed_keys(&a, &digests([("other", b"x".as_slice())])), ["k"]);
        assert_ne!(source_hash(Some(&a)), source_hash(Some(&b)));
        assert_eq!(source_hash(Some(&a)), source_hash(Some(&a.clone())));
        assert_eq!(source_hash(Some(&a)).len(), 16);
        // Key and value boundaries are part of the hash.
        let joined = digests([("ab", b"".as_slice())]);
        let split = digests([("a", b"b".as_slice())]);
        assert_ne!(source_hash(Some(&joined)), source_hash(Some(&split)));
        let sources: BTreeSet<Source> = [Source::configmap("app"), Source::secret("db")].into();
        let before = record(&sources, |s| (s.kind == SourceKind::ConfigMap).then_some(&a));
        assert!(before.starts_with("configmap/app=") && before.ends_with(",secret/db=absent"));
        let after = record(&sources, |s| (s.kind == SourceKind::ConfigMap).then_some(&b));
        assert_eq!(changed_sources(&before, &after), ["configmap/app"]);
        assert_eq!(decide(None, before.clone()), Decision::Record(before.clone()));
        assert_eq!(decide(Some(&before), before.clone()), Decision::Nothing);
        assert_eq!(
            decide(Some(&before), after.clone()),
            Decision::Restart { record: after.clone(), sources: vec!["configmap/app".into()] }
        );
        // A source newly watched (the annotation or spec changed) is recorded, not restarted.
        let more: BTreeSet<Source> =
            [Source::configmap("app"), Source::secret("db"), Source::configmap("new")].into();
        let wider = record(&more, |s| (s.name == "app").then_some(&a));
        assert_eq!(decide(Some(&before), wider.clone()), Decision::Record(wider));
        // The secret appearing is a change of content.
        let created = record(&sources, |_| Some(&a));
        assert!(
            matches!(decide(Some(&before), created), Decision::Restart { sources, .. } if sources == ["secret/db"])
        );
    }
}
