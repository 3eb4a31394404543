//! Object semantics shared by every kind: metadata on create and update,
//! name rules, defaulting and validation of what clients rely on.
//! Pure functions over `serde_json::Value`; the clock is an argument.

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::Kind;

/// `2006-01-02T15:04:05Z` for a unix time in seconds.
pub fn rfc3339(unix_seconds: i64) -> String {
    rfc3339_checked(unix_seconds).unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// [`rfc3339`], or `None` for a time outside the years 0001 to 9999.
pub fn rfc3339_checked(unix_seconds: i64) -> Option<String> {
    let ts = k8s_openapi::jiff::Timestamp::from_second(unix_seconds).ok()?;
    // jiff goes from year -9999; RFC 3339 (and Kubernetes) from year 0001.
    (ts.as_second() >= -62_135_596_800).then(|| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

/// Name rules: namespaces (and container names) are DNS labels, other
/// objects DNS subdomains.
pub fn validate_name(kind: &Kind, name: &str) -> Option<Cause> {
    if kind.group == "rbac.authorization.k8s.io" {
        // RBAC names only need to be a path segment (`system:controller:x` is one).
        let bad = name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']);
        return bad.then(|| {
            Cause::invalid(
                "metadata.name",
                &json!(name),
                "may not be '.' or '..', or contain '/' or '%'",
            )
        });
    }
    let (ok, rule) = if kind.is("Namespace") {
        (is_label(name), DNS1123_LABEL)
    } else {
        (is_subdomain(name), DNS1123_SUBDOMAIN)
    };
    (!ok).then(|| Cause::invalid("metadata.name", &json!(name), rule))
}

/// Five characters of the alphabet Kubernetes uses for generateName.
pub fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn obj_mut(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// `value[key]`, created as an empty object when absent or not an object.
pub fn child<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    let map = obj_mut(value);
    let entry = map.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry
}

fn set_default(map: &mut Value, key: &str, default: Value) {
    let map = obj_mut(map);
    match map.get(key) {
        Some(v) if !v.is_null() && v != "" => {}
        _ => {
            map.insert(key.to_owned(), default);
        }
    }
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// Checks apiVersion/kind of a request body against the endpoint.
pub fn check_type(kind: &Kind, obj: &Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::BadRequest("the request body must be a JSON object".into()));
    }
    let api_version = obj["apiVersion"].as_str().unwrap_or(kind.api_version);
    let k = obj["kind"].as_str().unwrap_or(kind.kind);
    if api_version != kind.api_version || k != kind.kind {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            kind.api_version
        ))
        .with_kind_hint(k, kind.kind));
    }
    Ok(())
}

impl ApiError {
    fn with_kind_hint(self, got: &str, want: &str) -> ApiError {
        if got == want {
            self
        } else {
            ApiError::BadRequest(format!("kind {got} does not match the expected kind {want}"))
        }
    }
}

/// Typed decode (400, as the Go decoder's errors are) then semantic
/// validation (422 naming each bad field).
pub fn validate(kind: &Kind, obj: &Value) -> ApiResult<()> {
    (kind.decode)(obj).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            kind.kind, kind.version, kind.kind
        ))
    })?;
    let mut causes = Vec::new();
    let name = name_of(obj);
    if let Some(c) = validate_name(kind, name) {
        causes.push(c);
    }
    match kind.kind {
        "Role" | "ClusterRole" => validate_rules(kind, obj, &mut causes),
        "RoleBinding" | "ClusterRoleBinding" => validate_binding(kind, obj, &mut causes),
        "Pod" => validate_pod_spec(&obj["spec"], "spec", &mut causes),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            validate_selector_matches(obj, &mut causes);
            validate_pod_spec(&obj["spec"]["template"]["spec"], "spec.template.spec", &mut causes);
            if obj["spec"]["replicas"].as_i64().is_some_and(|r| r < 0) {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &obj["spec"]["replicas"],
                    "must be greater than or equal to 0",
                ));
            }
        }
        "Job" => {
            validate_selector_matches(obj, &mut causes);
            validate_pod_spec(&obj["spec"]["template"]["spec"], "spec.template.spec", &mut causes);
            let policy = &obj["spec"]["template"]["spec"]["restartPolicy"];
            if !matches!(policy.as_str(), Some("Never" | "OnFailure")) {
                causes.push(Cause::invalid(
                    "spec.template.spec.restartPolicy",
                    policy,
                    "supported values: \"OnFailure\", \"Never\"",
                ));
            }
            for field in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"] {
                if obj["spec"][field].as_i64().is_some_and(|v| v < 0) {
                    causes.push(Cause::invalid(
                        format!("spec.{field}"),
                        &obj["spec"][field],
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        "CronJob" => {
            if obj["spec"]["schedule"].as_str().is_none_or(|s| s.trim().is_empty()) {
                causes.push(Cause::required("spec.schedule", ""));
            }
            let policy = &obj["spec"]["concurrencyPolicy"];
            if !matches!(policy.as_str(), Some("Allow" | "Forbid" | "Replace")) {
                causes.push(Cause::invalid(
                    "spec.concurrencyPolicy",
                    policy,
                    "supported values: \"Allow\", \"Forbid\", \"Replace\"",
                ));
            }
        }
        "ReplicationController" => {
            if obj["spec"]["template"].is_object() {
                validate_pod_spec(
                    &obj["spec"]["template"]["spec"],
                    "spec.template.spec",
                    &mut causes,
                );
            }
            if obj["spec"]["replicas"].as_i64().is_some_and(|r| r < 0) {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &obj["spec"]["replicas"],
                    "must be greater than or equal to 0",
                ));
            }
        }
        "StatefulSet" => {
            validate_selector_matches(obj, &mut causes);
            validate_pod_spec(&obj["spec"]["template"]["spec"], "spec.template.spec", &mut causes);
            let spec = &obj["spec"];
            for field in ["replicas", "revisionHistoryLimit", "minReadySeconds"] {
                if spec[field].as_i64().is_some_and(|v| v < 0) {
                    causes.push(Cause::invalid(
                        format!("spec.{field}"),
                        &spec[field],
                        "must be greater than or equal to 0",
                    ));
                }
            }
            supported(
                spec,
                "spec",
                "podManagementPolicy",
                &["OrderedReady", "Parallel"],
                &mut causes,
            );
            supported(
                &spec["updateStrategy"],
                "spec.updateStrategy",
                "type",
                &["RollingUpdate", "OnDelete"],
                &mut causes,
            );
        }
        "PodDisruptionBudget" => {
            let spec = &obj["spec"];
            if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
                causes.push(Cause::invalid(
                    "spec",
                    spec,
                    "minAvailable and maxUnavailable cannot be both set",
                ));
            }
            for field in ["minAvailable", "maxUnavailable"] {
                match &spec[field] {
                    Value::Number(n) if n.as_i64().is_none_or(|n| n < 0) => {
                        causes.push(Cause::invalid(
                            format!("spec.{field}"),
                            &spec[field],
                            "must be greater than or equal to 0",
                        ))
                    }
                    Value::String(p) if !valid_percent(p) => causes.push(Cause::invalid(
                        format!("spec.{field}"),
                        &spec[field],
                        "must be an integer or a percentage between 0% and 100%",
                    )),
                    _ => {}
                }
            }
            supported(
                spec,
                "spec",
                "unhealthyPodEvictionPolicy",
                &["IfHealthyBudget", "AlwaysAllow"],
                &mut causes,
            );
        }
        "Service" => validate_service(obj, &mut causes),
        _ => {}
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(kind, name, causes)) }
}

/// Where a kind keeps the pod spec it runs, if it has one.
fn pod_spec<'a>(kind: &Kind, obj: &'a Value) -> Option<(&'a Value, &'static str)> {
    match kind.kind {
        "Pod" => Some((&obj["spec"], "spec")),
        "PodTemplate" => Some((&obj["template"]["spec"], "template.spec")),
        "Deployment"
        | "ReplicaSet"
        | "DaemonSet"
        | "StatefulSet"
        | "Job"
        | "ReplicationController" => Some((&obj["spec"]["template"]["spec"], "spec.template.spec")),
        "CronJob" => Some((
            &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            "spec.jobTemplate.spec.template.spec",
        )),
        _ => None,
    }
}

/// For a cluster that does not allow privileged containers (`--allow-privileged=false`):
/// refuses a pod, or a pod template, with a container that asks for it (422).
pub fn forbid_privileged(kind: &Kind, obj: &Value) -> ApiResult<()> {
    let Some((spec, at)) = pod_spec(kind, obj) else { return Ok(()) };
    let mut causes = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let containers = spec[list].as_array().map(Vec::as_slice).unwrap_or_default();
        for (i, c) in containers.iter().enumerate() {
            if c["securityContext"]["privileged"] == Value::Bool(true) {
                causes.push(Cause::forbidden(
                    format!("{at}.{list}[{i}].securityContext.privileged"),
                    "disallowed by cluster policy",
                ));
            }
        }
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(kind, name_of(obj), causes)) }
}

/// A field that, when set, must be one of `allowed` (Kubernetes' "Unsupported value").
fn supported(parent: &Value, at: &str, key: &str, allowed: &[&str], causes: &mut Vec<Cause>) {
    if let Some(v) = parent[key].as_str()
        && !allowed.contains(&v)
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: format!("{at}.{key}"),
            message: format!(
                "Unsupported value: {v:?}: supported values: {}",
                allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
}

/// `0%` to `100%`.
fn valid_percent(text: &str) -> bool {
    text.strip_suffix('%').and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n <= 100)
}

fn validate_selector_matches(obj: &Value, causes: &mut Vec<Cause>) {
    let selector = &obj["spec"]["selector"];
    let labels = &obj["spec"]["template"]["metadata"]["labels"];
    let match_labels = selector["matchLabels"].as_object();
    if selector.is_null()
        || (match_labels.is_none_or(|m| m.is_empty()) && selector["matchExpressions"].is_null())
    {
        causes.push(Cause::required("spec.selector", ""));
        return;
    }
    if let Some(m) = match_labels
        && m.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        ));
    }
}

fn validate_pod_spec(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let containers = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
    if containers.is_empty() {
        causes.push(Cause::required(format!("{at}.containers"), ""));
    }
    let mut seen = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let field = format!("{at}.containers[{i}]");
        match c["name"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{field}.name"), "")),
            Some(name) if !is_label(name) => {
                causes.push(Cause::invalid(format!("{field}.name"), &c["name"], DNS1123_LABEL))
            }
            Some(name) if seen.contains(&name) => causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{field}.name"),
                message: format!("Duplicate value: {:?}", name),
            }),
            Some(name) => seen.push(name),
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            causes.push(Cause::required(format!("{field}.image"), ""));
        }
        for (j, p) in
            c["ports"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate()
        {
            let port = &p["containerPort"];
            if port.as_i64().is_none_or(|n| !(1..=65535).contains(&n)) {
                causes.push(Cause::invalid(
                    format!("{field}.ports[{j}].containerPort"),
                    port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
    for key in ["restartPolicy", "dnsPolicy"] {
        let allowed: &[&str] = if key == "restartPolicy" {
            &["Always", "OnFailure", "Never"]
        } else {
            &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]
        };
        if let Some(v) = spec[key].as_str()
            && !allowed.contains(&v)
        {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{at}.{key}"),
                message: format!(
                    "Unsupported value: {:?}: supported values: {}",
                    v,
                    allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
}

fn validate_service(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let headless = spec["clusterIP"] == "None";
    let external = spec["type"] == "ExternalName";
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    if ports.is_empty() && !headless && !external {
        causes.push(Cause::required("spec.ports", ""));
    }
    for (i, p) in ports.iter().enumerate() {
        if p["port"].as_i64().is_none_or(|n| !(1..=65535).contains(&n)) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ports.len() > 1 && p["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("spec.ports[{i}].name"), ""));
        }
    }
    if let Some(t) = spec["type"].as_str()
        && !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&t)
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.type".into(),
            message: format!("Unsupported value: {t:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        });
    }
}

/// Defaults what kubectl and km rely on.
/// Removes every `null` member: Kubernetes reads an object into typed fields, where null and
/// absent are one thing, so a stored object holds neither (nor does the defaulting's own
/// indexing leave any behind).
pub fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, item| !item.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

pub fn apply_defaults(kind: &Kind, obj: &mut Value) {
    match kind.kind {
        "Pod" => default_pod_spec(child(obj, "spec")),
        "Deployment" => {
            let spec = child(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = child(spec, "strategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = child(strategy, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
            default_template(spec);
        }
        "Job" => {
            let uid = obj["metadata"]["uid"].clone();
            let name = obj["metadata"]["name"].clone();
            let spec = child(obj, "spec");
            if spec["completions"].is_null() && spec["parallelism"].is_null() {
                spec["completions"] = json!(1);
            }
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            // A Job's pods run to completion: Never unless the template says OnFailure.
            set_default(child(child(spec, "template"), "spec"), "restartPolicy", json!("Never"));
            // The selector (unless given by hand) is the Job's own uid, on the template too.
            if spec["manualSelector"] != json!(true)
                && spec["selector"].is_null()
                && uid.is_string()
            {
                let labels = child(child(child(spec, "template"), "metadata"), "labels");
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", &uid),
                    ("batch.kubernetes.io/job-name", &name),
                    ("controller-uid", &uid),
                    ("job-name", &name),
                ] {
                    set_default(labels, k, v.clone());
                }
                spec["selector"] =
                    json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": uid } });
            }
            default_template(spec);
        }
        "CronJob" => {
            let spec = child(obj, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            let job = child(child(spec, "jobTemplate"), "spec");
            set_default(job, "backoffLimit", json!(6));
            set_default(child(child(job, "template"), "spec"), "restartPolicy", json!("Never"));
            default_template(job);
        }
        "StatefulSet" => {
            let spec = child(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            let strategy = child(spec, "updateStrategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_default(child(strategy, "rollingUpdate"), "partition", json!(0));
            }
            let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
            set_default(retention, "whenDeleted", json!("Retain"));
            set_default(retention, "whenScaled", json!("Retain"));
            default_template(spec);
        }
        "ReplicaSet" | "ReplicationController" => {
            let spec = child(obj, "spec");
            set_default(spec, "replicas", json!(1));
            if kind.is("ReplicationController") && spec["selector"].is_null() {
                let labels = spec["template"]["metadata"]["labels"].clone();
                if labels.is_object() {
                    spec["selector"] = labels;
                }
            }
            if spec["template"].is_object() {
                default_template(spec);
            }
        }
        "DaemonSet" => {
            let spec = child(obj, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            let strategy = child(spec, "updateStrategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = child(strategy, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
            default_template(spec);
        }
        "Service" => {
            let spec = child(obj, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if let Some(ports) = spec["ports"].as_array_mut() {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    if p["targetPort"].is_null() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
        }
        "Secret" => set_default(obj, "type", json!("Opaque")),
        "Namespace" => {
            let spec = child(obj, "spec");
            set_default(spec, "finalizers", json!(["kubernetes"]));
            set_default(child(obj, "status"), "phase", json!("Active"));
        }
        _ => {}
    }
}

fn default_template(spec: &mut Value) {
    let template = child(spec, "template");
    default_pod_spec(child(template, "spec"));
}

fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec[list].as_array_mut() {
            for c in containers {
                let image = c["image"].as_str().unwrap_or_default();
                let last = image.rsplit('/').next().unwrap_or_default();
                let tag = last
                    .split_once('@')
                    .map(|_| "digest")
                    .or_else(|| last.split_once(':').map(|(_, t)| t));
                let policy = match tag {
                    None | Some("latest") => "Always",
                    Some(_) => "IfNotPresent",
                };
                set_default(c, "imagePullPolicy", json!(policy));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c["ports"].as_array_mut() {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Metadata for a new object: name (from generateName), namespace, uid,
/// creationTimestamp, generation; server-owned fields cleared.
pub fn prepare_create(
    kind: &Kind,
    obj: &mut Value,
    namespace: Option<&str>,
    now: i64,
) -> ApiResult<()> {
    obj["apiVersion"] = json!(kind.api_version);
    obj["kind"] = json!(kind.kind);
    let meta = child(obj, "metadata");
    if meta["name"].as_str().is_none_or(str::is_empty) {
        match meta["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => {
                meta["name"] = json!(format!("{prefix}{}", random_suffix()))
            }
            _ => {
                return Err(ApiError::invalid(
                    kind,
                    "",
                    vec![Cause::required("metadata.name", "name or generateName is required")],
                ));
            }
        }
    }
    if kind.namespaced {
        let ns = namespace.unwrap_or("default");
        match meta["namespace"].as_str() {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            _ => meta["namespace"] = json!(ns),
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    let m = obj_mut(meta);
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        m.remove(k);
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(rfc3339(now)));
    if obj.get("spec").is_some() || kind.has_scale() {
        obj["metadata"]["generation"] = json!(1);
    }
    if kind.is("Pod") {
        let status = child(obj, "status");
        set_default(status, "phase", json!("Pending"));
        set_default(status, "qosClass", json!("BestEffort"));
    }
    if kind.has_status() && !kind.is("Pod") && !kind.is("Namespace") && !kind.is("Node") {
        // Status of controllers' objects is theirs to write.
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    Ok(())
}

/// The object to store for an update of `old` with `new`: server-owned
/// metadata kept, the status (main resource) or everything but the status
/// (`/status`) taken from `old`, generation bumped on spec changes.
pub fn prepare_update(
    kind: &Kind,
    old: &Value,
    mut new: Value,
    subresource: Option<&str>,
) -> Value {
    new["apiVersion"] = json!(kind.api_version);
    new["kind"] = json!(kind.kind);
    if subresource == Some("finalize") {
        // A namespace's finalize: only spec.finalizers changes.
        let mut out = old.clone();
        child(&mut out, "spec")["finalizers"] =
            new["spec"].get("finalizers").cloned().unwrap_or_else(|| json!([]));
        return out;
    }
    if subresource == Some("status") {
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if out["status"].is_null()
            && let Some(m) = out.as_object_mut()
        {
            m.remove("status");
        }
        return out;
    }
    {
        let meta = child(&mut new, "metadata");
        let old_meta = &old["metadata"];
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(k) {
                Some(v) => meta[k] = v.clone(),
                None => {
                    if let Some(m) = meta.as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        if let Some(m) = meta.as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
            m.remove("selfLink");
        }
    }
    if kind.has_status() {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if new.get("spec") != old.get("spec") && old["metadata"].get("generation").is_some() {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    new
}

fn validate_rules(kind: &Kind, obj: &Value, causes: &mut Vec<Cause>) {
    let empty = Vec::new();
    for (i, rule) in obj["rules"].as_array().unwrap_or(&empty).iter().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        let len = |f: &str| rule[f].as_array().map_or(0, Vec::len);
        if len("verbs") == 0 {
            causes.push(Cause::required(at("verbs"), "verbs must contain at least one value"));
        }
        if len("nonResourceURLs") > 0 {
            if kind.is("Role") {
                causes.push(Cause::invalid(
                    at("nonResourceURLs"),
                    &rule["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if len("apiGroups") > 0 || len("resources") > 0 {
                causes.push(Cause::invalid(
                    at("nonResourceURLs"),
                    &rule["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        } else {
            if len("apiGroups") == 0 {
                causes.push(Cause::required(
                    at("apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
            if len("resources") == 0 {
                causes.push(Cause::required(
                    at("resources"),
                    "resource rules must supply at least one resource",
                ));
            }
        }
    }
}

fn validate_binding(kind: &Kind, obj: &Value, causes: &mut Vec<Cause>) {
    let role_ref = &obj["roleRef"];
    if role_ref["apiGroup"].as_str() != Some("rbac.authorization.k8s.io") {
        causes.push(Cause::invalid(
            "roleRef.apiGroup",
            &role_ref["apiGroup"],
            "supported values: \"rbac.authorization.k8s.io\"",
        ));
    }
    let kinds: &[&str] =
        if kind.is("ClusterRoleBinding") { &["ClusterRole"] } else { &["Role", "ClusterRole"] };
    if !role_ref["kind"].as_str().is_some_and(|k| kinds.contains(&k)) {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "roleRef.kind".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                role_ref["kind"],
                kinds.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    if role_ref["name"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("roleRef.name", ""));
    }
    let empty = Vec::new();
    for (i, subject) in obj["subjects"].as_array().unwrap_or(&empty).iter().enumerate() {
        let at = |f: &str| format!("subjects[{i}].{f}");
        if subject["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(at("name"), ""));
        }
        match subject["kind"].as_str() {
            Some("User" | "Group") => {}
            Some("ServiceAccount") => {
                if subject["namespace"].as_str().is_none_or(str::is_empty) && kind.is("ClusterRoleBinding") {
                    causes.push(Cause::required(at("namespace"), ""));
                }
            }
            _ => causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: at("kind"),
                message: format!("Unsupported value: {}: supported values: \"ServiceAccount\", \"User\", \"Group\"", subject["kind"]),
            }),
        }
    }
}

/// Validation of an update beyond the create rules: immutable fields.
pub fn validate_update(kind: &Kind, old: &Value, new: &Value) -> ApiResult<()> {
    let mut causes = Vec::new();
    if (kind.is("RoleBinding") || kind.is("ClusterRoleBinding")) && old["roleRef"] != new["roleRef"]
    {
        causes.push(Cause::invalid("roleRef", &new["roleRef"], "cannot change roleRef"));
    }
    if kind.is("Pod") {
        let old_node = old["spec"]["nodeName"].as_str().unwrap_or_default();
        let new_node = new["spec"]["nodeName"].as_str().unwrap_or_default();
        if !old_node.is_empty() && old_node != new_node {
            causes.push(Cause::forbidden("spec.nodeName", "field is immutable once set"));
        }
        let strip = |v: &Value| {
            let mut s = v["spec"].clone();
            if let Some(m) = s.as_object_mut() {
                m.remove("nodeName");
                m.remove("activeDeadlineSeconds");
                m.remove("tolerations");
                if let Some(cs) = m.get_mut("containers").and_then(Value::as_array_mut) {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.remove("image");
                        }
                    }
                }
            }
            s
        };
        if strip(old) != strip(new) {
            causes.push(Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }
    if (kind.is("Deployment") || kind.is("ReplicaSet") || kind.is("DaemonSet"))
        && old["spec"]["selector"] != new["spec"]["selector"]
    {
        causes.push(Cause::invalid(
            "spec.selector",
            &new["spec"]["selector"],
            "field is immutable",
        ));
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(kind, name_of(new), causes)) }
}

/// Sets `metadata.resourceVersion` (the stored bytes do not carry it).
pub fn with_revision(mut obj: Value, revision: i64) -> Value {
    child(&mut obj, "metadata")["resourceVersion"] = json!(revision.to_string());
    obj
}

/// [`with_revision`] on a stored object's JSON text, without parsing it into a value: the
/// `resourceVersion` goes first into the top-level `metadata` object. `None` when the text has
/// no top-level metadata object or already names a resourceVersion in it (then parse it).
pub fn with_revision_bytes(json: &[u8], revision: i64) -> Option<Vec<u8>> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut key_start: Option<usize> = None;
    let mut last_key: &[u8] = b"";
    let mut meta_open: Option<usize> = None;
    for (i, &b) in json.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    if let Some(start) = key_start.take() {
                        last_key = &json[start..i];
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                // A string right after `{` or `,` at an object level is a key.
                let prev = json[..i].iter().rev().find(|c| !c.is_ascii_whitespace());
                if matches!(prev, Some(b'{' | b',')) {
                    key_start = Some(i + 1);
                }
            }
            b'{' | b'[' => {
                if b == b'{' && depth == 1 && last_key == b"metadata" && meta_open.is_none() {
                    meta_open = Some(i);
                }
                depth += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 1 && meta_open.is_some() {
                    break;
                }
            }
            b':' if depth == 2 && meta_open.is_some() && last_key == b"resourceVersion" => {
                return None;
            }
            _ => {}
        }
    }
    let open = meta_open?;
    let empty = json[open + 1..].iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'}');
    let field = format!("\"resourceVersion\":\"{revision}\"{}", if empty { "" } else { "," });
    let mut out = Vec::with_capacity(json.len() + field.len());
    out.extend_from_slice(&json[..=open]);
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(&json[open + 1..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn a_revision_goes_into_stored_text_as_into_the_value() {
        for obj in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"metadata": "{\"x\": 1}", "k\"metadata\"": "v"}, "metadata": {"name": "a", "labels": {"metadata": "x"}}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"metadata": {"resourceVersion": "1"}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "annotations": {"a": "}{\\\""}}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}),
        ] {
            let text = serde_json::to_vec(&obj).expect("json");
            let out = with_revision_bytes(&text, 42).expect("has metadata");
            let parsed: Value = serde_json::from_slice(&out).expect("still JSON");
            assert_eq!(parsed, with_revision(obj.clone(), 42), "{}", String::from_utf8_lossy(&out));
        }
        assert!(with_revision_bytes(br#"{"metadata":{"resourceVersion":"3"}}"#, 4).is_none());
        assert!(with_revision_bytes(br#"{"kind":"X"}"#, 4).is_none());
        assert!(with_revision_bytes(b"", 4).is_none());
        assert!(with_revision_bytes(b"}}}", 4).is_none());
    }

    fn pods() -> &'static Kind {
        lookup("", "v1", "pods").expect("pods")
    }

    #[test]
    fn pod_defaults() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx"},
            {"name": "b", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
            {"name": "c", "image": "reg:5000/x", "imagePullPolicy": "Never"},
        ]}});
        apply_defaults(pods(), &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][2]["imagePullPolicy"], "Never");
        assert_eq!(spec["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["containers"][0]["terminationMessagePath"], "/dev/termination-log");
    }

    #[test]
    fn deployment_and_service_defaults() {
        let deploy = lookup("apps", "v1", "deployments").expect("deployments");
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply_defaults(deploy, &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let svc = lookup("", "v1", "services").expect("services");
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults(svc, &mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn invalid_pods_name_each_bad_field() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
            "spec": {"containers": [{"name": "", "image": ""}, {"name": "x", "image": "i", "ports": [{"containerPort": 0}]}]}});
        let err = validate(pods(), &pod).expect_err("invalid");
        assert_eq!(err.code(), http::StatusCode::UNPROCESSABLE_ENTITY);
        let status = err.status();
        let fields: Vec<&str> = status["details"]["causes"]
            .as_array()
            .expect("causes")
            .iter()
            .filter_map(|c| c["field"].as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.containers[0].name",
                "spec.containers[0].image",
                "spec.containers[1].ports[0].containerPort"
            ]
        );
        assert_eq!(status["reason"], "Invalid");
    }

    #[test]
    fn type_errors_are_400() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        assert_eq!(validate(pods(), &pod).expect_err("bad").code(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn create_metadata() {
        let mut pod =
            json!({"metadata": {"generateName": "web-", "resourceVersion": "5"}, "spec": {}});
        prepare_create(pods(), &mut pod, Some("ns"), 0).expect("create");
        let meta = &pod["metadata"];
        assert!(meta["name"].as_str().is_some_and(|n| n.starts_with("web-") && n.len() == 9));
        assert_eq!(meta["namespace"], "ns");
        assert_eq!(meta["creationTimestamp"], "1970-01-01T00:00:00Z");
        assert!(meta.get("resourceVersion").is_none());
        assert_eq!(pod["status"]["phase"], "Pending");
        let mut other = json!({"metadata": {"name": "p", "namespace": "other"}});
        assert!(prepare_create(pods(), &mut other, Some("ns"), 0).is_err());
        let mut nameless = json!({"metadata": {}});
        assert_eq!(
            prepare_create(pods(), &mut nameless, Some("ns"), 0).expect_err("x").code().as_u16(),
            422
        );
    }

    #[test]
    fn update_keeps_server_fields_and_bumps_generation() {
        let deploy = lookup("apps", "v1", "deployments").expect("deployments");
        let old = json!({"metadata": {"name": "d", "uid": "u", "generation": 1, "creationTimestamp": "t"},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"metadata": {"name": "d", "uid": "other", "labels": {"a": "b"}}, "spec": {"replicas": 3}, "status": {}});
        let out = prepare_update(deploy, &old, new.clone(), None);
        assert_eq!(out["metadata"]["uid"], "u");
        assert_eq!(out["metadata"]["generation"], 2);
        assert_eq!(out["metadata"]["labels"]["a"], "b");
        assert_eq!(out["status"]["replicas"], 1);
        let status_only = prepare_update(
            deploy,
            &old,
            json!({"spec": {"replicas": 9}, "status": {"replicas": 7}}),
            Some("status"),
        );
        assert_eq!(status_only["spec"]["replicas"], 1);
        assert_eq!(status_only["status"]["replicas"], 7);
    }
}
