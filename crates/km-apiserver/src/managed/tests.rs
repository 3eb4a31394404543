use serde_json::json;

use super::*;

fn deployments() -> &'static Kind {
    crate::registry::lookup("apps", "v1", "deployments").expect("deployments")
}

fn writer(name: &str) -> Writer {
    Writer { manager: name.into(), subresource: String::new() }
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

fn entries(obj: &Value) -> Vec<(String, String)> {
    Managed::of(obj)
        .expect("managed fields")
        .0
        .iter()
        .map(|e| (e.key.manager.clone(), e.key.operation.to_owned()))
        .collect()
}

fn fields_of(obj: &Value, manager: &str) -> Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .find(|e| e["manager"] == manager)
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn an_applied_configuration_owns_what_it_names_in_fields_v1() {
    let obj =
        apply(deployments(), &writer("kubectl"), None, &deployment(2, "nginx:1"), false, 1000)
            .expect("apply");
    assert_eq!(
        fields_of(&obj, "kubectl"),
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        }),
        "the selector is atomic, containers merge on name, ports on containerPort and protocol"
    );
    let entry = &obj["metadata"]["managedFields"][0];
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["apiVersion"], "apps/v1");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["time"], "1970-01-01T00:16:40Z");
}

#[test]
fn field_sets_read_back_what_they_write() {
    let obj = apply(deployments(), &writer("kubectl"), None, &deployment(2, "nginx:1"), false, 0)
        .expect("apply");
    let set = Managed::of(&obj).expect("decode").0.remove(0).set;
    assert_eq!(FieldSet::from_json(&set.to_json()).expect("read"), set);
    let paths: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
    assert!(paths.contains(&".spec.replicas".to_owned()), "{paths:?}");
    assert!(
        paths.contains(&".spec.template.spec.containers[name=\"web\"].image".to_owned()),
        "{paths:?}"
    );
    assert!(FieldSet::from_json(&json!({"x:1": {}})).is_err());
    assert!(FieldSet::from_json(&json!([])).is_err());
}

#[test]
fn an_update_takes_over_what_it_changes() {
    let kind = deployments();
    let mut created = deployment(2, "nginx:1");
    track_update(kind, Some(&writer("kubectl-create")), None, &mut created, None, 10)
        .expect("create");
    assert_eq!(entries(&created), [("kubectl-create".into(), "Update".into())]);
    let created_fields = fields_of(&created, "kubectl-create");
    assert_eq!(created_fields["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        created_fields["f:metadata"]["f:labels"]["."],
        json!({}),
        "a map the write added is owned itself"
    );

    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(5);
    track_update(kind, Some(&writer("kubectl-scale")), Some(&created), &mut scaled, None, 20)
        .expect("scale");
    assert_eq!(fields_of(&scaled, "kubectl-scale"), json!({"f:spec": {"f:replicas": {}}}));
    assert!(
        fields_of(&scaled, "kubectl-create")["f:spec"].get("f:replicas").is_none(),
        "the field changed hands"
    );

    // Writing the same object again changes nothing, not even a timestamp.
    let mut again = scaled.clone();
    track_update(kind, Some(&writer("kubectl-scale")), Some(&scaled), &mut again, None, 30)
        .expect("no-op");
    assert_eq!(again, scaled);
}

#[test]
fn apply_conflicts_name_the_manager_and_the_field_unless_forced() {
    let kind = deployments();
    let mut live = deployment(2, "nginx:1");
    track_update(kind, Some(&writer("kubectl-client-side-apply")), None, &mut live, None, 10)
        .expect("create");

    // The same values: shared ownership, no conflict.
    let shared = apply(kind, &writer("kubectl"), Some(&live), &deployment(2, "nginx:1"), false, 20)
        .expect("same values");
    assert_eq!(shared["spec"]["replicas"], 2);
    assert_eq!(fields_of(&shared, "kubectl")["f:spec"]["f:replicas"], json!({}));
    assert_eq!(fields_of(&shared, "kubectl-client-side-apply")["f:spec"]["f:replicas"], json!({}));

    let err = apply(kind, &writer("kubectl"), Some(&live), &deployment(3, "nginx:2"), false, 20)
        .expect_err("conflict");
    assert_eq!(err.code().as_u16(), 409);
    let message = err.to_string();
    assert!(message.starts_with("Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:"), "{message}");
    assert!(message.contains("\n- .spec.replicas"), "{message}");
    assert!(
        message.contains("\n- .spec.template.spec.containers[name=\"web\"].image"),
        "{message}"
    );
    let status = err.status();
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["details"]["causes"][0]["reason"], "FieldManagerConflict");
    assert_eq!(status["details"]["causes"][0]["field"], ".spec.replicas");

    let forced = apply(kind, &writer("kubectl"), Some(&live), &deployment(3, "nginx:2"), true, 30)
        .expect("forced");
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(forced["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:2");
    let old_owner = fields_of(&forced, "kubectl-client-side-apply");
    assert!(old_owner["f:spec"].get("f:replicas").is_none(), "{old_owner}");
    assert_eq!(old_owner["f:spec"]["f:selector"], json!({}), "what did not change stays theirs");

    // One conflict reads as one sentence.
    let mut one = deployment(9, "nginx:1");
    one["metadata"]["labels"] = json!({"app": "web"});
    let err = apply(kind, &writer("kubectl"), Some(&live), &one, false, 20).expect_err("conflict");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
}

#[test]
fn fields_an_applier_drops_are_removed_unless_someone_else_owns_them() {
    let kind = deployments();
    let mut first = deployment(2, "nginx:1");
    first["metadata"]["labels"]["tier"] = json!("front");
    first["metadata"]["annotations"] = json!({"note": "x"});
    let live = apply(kind, &writer("kubectl"), None, &first, false, 10).expect("first apply");

    // Someone else sets a label of their own and takes the annotation over.
    let mut edited = live.clone();
    edited["metadata"]["labels"]["owner"] = json!("ops");
    edited["metadata"]["annotations"]["note"] = json!("y");
    track_update(kind, Some(&writer("kubectl-label")), Some(&live), &mut edited, None, 20)
        .expect("label");

    // The applier drops its tier label and the annotation.
    let second = deployment(2, "nginx:1");
    let out = apply(kind, &writer("kubectl"), Some(&edited), &second, false, 30).expect("second");
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "owner": "ops"}));
    assert_eq!(out["metadata"]["annotations"], json!({"note": "y"}), "owned by the labeller now");

    // A container the applier no longer names goes; the one it keeps stays.
    let mut two = deployment(2, "nginx:1");
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "side", "image": "busybox"}));
    let with_two = apply(kind, &writer("kubectl"), Some(&out), &two, false, 40).expect("two");
    assert_eq!(
        with_two["spec"]["template"]["spec"]["containers"].as_array().map(Vec::len),
        Some(2)
    );
    let back =
        apply(kind, &writer("kubectl"), Some(&with_two), &deployment(2, "nginx:1"), false, 50)
            .expect("back to one");
    let names: Vec<&str> = back["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["web"]);
}

#[test]
fn reapplying_the_same_configuration_is_a_no_op() {
    let kind = deployments();
    let live =
        apply(kind, &writer("kubectl"), None, &deployment(2, "nginx:1"), false, 10).expect("apply");
    let again = apply(kind, &writer("kubectl"), Some(&live), &deployment(2, "nginx:1"), false, 99)
        .expect("again");
    assert_eq!(again, live, "same object, same timestamps");
}

#[test]
fn merging_keeps_live_items_in_place_and_appends_new_ones() {
    let shape = Shape::of_kind("apps/v1", "Deployment");
    let live = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
        {"name": "b", "image": "b:1"}
    ]}}}});
    let config = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "c:1"},
        {"name": "a", "image": "a:2", "ports": [{"containerPort": 80}]}
    ]}}}});
    let out = merge(Some(&live), &config, &shape);
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers[0],
        json!({"name": "a", "image": "a:2", "ports": [{"containerPort": 80, "protocol": "TCP"}]}),
        "a port without protocol is the TCP one"
    );
    assert_eq!(containers[1]["name"], "b");
    assert_eq!(containers[2]["name"], "c");
    // Atomic parts are replaced whole.
    let live = json!({"spec": {"selector": {"matchLabels": {"a": "1", "b": "2"}}}});
    let out =
        merge(Some(&live), &json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}}), &shape);
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"a": "1"}}));
}

#[test]
fn bad_configurations_and_managers_are_refused_with_the_reason() {
    let kind = deployments();
    let mut dup = deployment(1, "x");
    dup["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]);
    let err = apply(kind, &writer("m"), None, &dup, false, 0).expect_err("duplicate");
    assert!(err.to_string().contains("duplicate entries for key [name=\"a\"]"), "{err}");
    let mut keyless = deployment(1, "x");
    keyless["spec"]["template"]["spec"]["containers"] = json!([{"image": "x"}]);
    let err = apply(kind, &writer("m"), None, &keyless, false, 0).expect_err("no key");
    assert!(err.to_string().contains("none of its key fields (name)"), "{err}");
    let mut with_managed = deployment(1, "x");
    with_managed["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply(kind, &writer("m"), None, &with_managed, false, 0)
            .expect_err("managed")
            .code()
            .as_u16(),
        400
    );

    let mut obj = deployment(1, "x");
    let bad = json!([{"manager": "m", "operation": "Delete"}]);
    let err =
        track_update(kind, Some(&writer("m")), None, &mut obj, Some(&bad), 0).expect_err("bad");
    assert_eq!(err.code().as_u16(), 422);
    assert!(err.to_string().contains("metadata.managedFields"), "{err}");

    let many: Vec<Value> = (0..1001)
        .map(
            |i| json!({"manager": format!("m{i}"), "operation": "Update", "fieldsV1": {"f:a": {}}}),
        )
        .collect();
    let err = track_update(kind, Some(&writer("m")), None, &mut obj, Some(&Value::Array(many)), 0)
        .expect_err("too many");
    assert!(err.to_string().contains("at most 1000"), "{err}");

    assert_eq!(manager_name(None, Some("kubectl/v1.32.0 (linux/amd64)")).as_deref(), Ok("kubectl"));
    assert_eq!(manager_name(Some("mine"), Some("kubectl/v1")).as_deref(), Ok("mine"));
    assert!(manager_name(Some(&"x".repeat(129)), None).is_err());
    assert!(manager_name(Some("a\nb"), None).is_err());
}

#[test]
fn a_request_can_reset_managed_fields_and_updates_are_capped() {
    let kind = deployments();
    let mut live = deployment(1, "x");
    track_update(kind, Some(&writer("a")), None, &mut live, None, 0).expect("create");
    let mut cleared = live.clone();
    track_update(kind, Some(&writer("b")), Some(&live), &mut cleared, Some(&json!([{}])), 1)
        .expect("clear");
    assert!(cleared["metadata"].get("managedFields").is_none());

    // Eleven managers each change a label of their own: the oldest fold into one entry.
    let mut obj = live;
    for i in 0..12 {
        let mut next = obj.clone();
        next["metadata"]["labels"][format!("l{i}")] = json!("v");
        track_update(kind, Some(&writer(&format!("m{i}"))), Some(&obj), &mut next, None, 100 + i)
            .expect("update");
        obj = next;
    }
    let managers = entries(&obj);
    assert_eq!(managers.len(), 10, "{managers:?}");
    assert!(managers.iter().any(|(m, _)| m == "ancient-changes"), "{managers:?}");
    assert!(managers.iter().any(|(m, _)| m == "m11"), "{managers:?}");
}

#[test]
fn status_writes_own_status_only() {
    let pods = crate::registry::lookup("", "v1", "pods").expect("pods");
    let status = Writer { manager: "km-executor".into(), subresource: "status".into() };
    let old = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
    let mut new = old.clone();
    new["status"]["phase"] = json!("Running");
    track_update(pods, Some(&status), Some(&old), &mut new, None, 5).expect("status");
    let entry = &new["metadata"]["managedFields"][0];
    assert_eq!(entry["subresource"], "status");
    assert_eq!(entry["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
}
