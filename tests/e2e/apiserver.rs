//! `km apiserver` on a real etcd, driven by kube-rs as km's components and
//! users' tools drive it: create, list with selectors, watch from a
//! resourceVersion (and 410 after compaction), bind, status, the three
//! patch types, graceful deletion, Status errors.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, Pod, ServiceAccount};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use serde_json::json;

use crate::support::apiserver::{ApiServer, SecureApiServer, compact_etcd, http};
use crate::support::etcd::Etcd;
use crate::support::runtime;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{ "name": "app", "image": "nginx:1.25" }] },
    }))
    .expect("pod")
}

/// The Status of a failed call.
fn status(err: kube::Error) -> Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("ns");
    nss.create(&PostParams::default(), &ns).await.expect("create namespace");
}

#[test]
fn crud_selectors_and_errors() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    runtime().block_on(async {
        let client = server.client();
        // The system namespaces and their default service accounts exist.
        let nss: Api<Namespace> = Api::all(client.clone());
        let names: Vec<String> = nss
            .list(&ListParams::default())
            .await
            .expect("list ns")
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        for want in ["default", "kube-system", "kube-public"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        sas.get("default").await.expect("default service account");

        create_namespace(&client, "e2e").await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "e2e");
        let created = pods
            .create(&PostParams::default(), &pod("web-1", json!({"app": "web", "tier": "fe"})))
            .await
            .expect("create");
        let meta = &created.metadata;
        assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
        assert!(meta.resource_version.as_deref().is_some_and(|rv| rv.parse::<i64>().is_ok()));
        let spec = created.spec.as_ref().expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(created.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"));

        pods.create(&PostParams::default(), &pod("web-2", json!({"app": "web", "tier": "be"})))
            .await
            .expect("create");
        pods.create(&PostParams::default(), &pod("db-1", json!({"app": "db"})))
            .await
            .expect("create");
        let mut generated = pod("", json!({}));
        generated.metadata.name = None;
        generated.metadata.generate_name = Some("gen-".into());
        let gen_pod = pods.create(&PostParams::default(), &generated).await.expect("generateName");
        assert!(
            gen_pod.metadata.name.as_deref().is_some_and(|n| n.starts_with("gen-") && n.len() == 9)
        );

        let names = |list: kube::core::ObjectList<Pod>| {
            let mut n: Vec<String> =
                list.items.into_iter().filter_map(|p| p.metadata.name).collect();
            n.sort();
            n
        };
        let by = |s: &str| ListParams::default().labels(s);
        assert_eq!(names(pods.list(&by("app=web")).await.expect("list")), ["web-1", "web-2"]);
        assert_eq!(names(pods.list(&by("app!=web,app")).await.expect("list")), ["db-1"]);
        assert_eq!(names(pods.list(&by("tier in (fe,xx)")).await.expect("list")), ["web-1"]);
        assert_eq!(
            names(pods.list(&by("tier notin (fe),app")).await.expect("list")),
            ["db-1", "web-2"]
        );
        assert_eq!(names(pods.list(&by("!tier")).await.expect("list")).len(), 2);
        let by_field = ListParams::default().fields("metadata.name=web-2");
        assert_eq!(names(pods.list(&by_field).await.expect("list")), ["web-2"]);
        let unscheduled = ListParams::default().fields("spec.nodeName=,status.phase=Pending");
        assert_eq!(pods.list(&unscheduled).await.expect("list").items.len(), 4);

        // limit/continue pages through a consistent snapshot.
        let first = pods.list(&ListParams::default().limit(3)).await.expect("page 1");
        assert_eq!(first.items.len(), 3);
        let token = first.metadata.continue_.clone().expect("continue token");
        let second = pods
            .list(&ListParams::default().limit(3).continue_token(&token))
            .await
            .expect("page 2");
        assert_eq!(second.items.len(), 1);
        assert!(second.metadata.continue_.as_deref().is_none_or(str::is_empty));

        // Errors are Status objects with the right code and reason.
        let dup = status(
            pods.create(&PostParams::default(), &pod("web-1", json!({})))
                .await
                .expect_err("duplicate"),
        );
        assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
        let missing = status(pods.get("nope").await.expect_err("missing"));
        assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
        let mut bad = pod("Bad_Name", json!({}));
        bad.spec.as_mut().expect("spec").containers[0].image = None;
        let invalid = status(pods.create(&PostParams::default(), &bad).await.expect_err("invalid"));
        assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
        assert!(
            invalid.message.contains("metadata.name")
                && invalid.message.contains("spec.containers[0].image"),
            "{}",
            invalid.message
        );
        let no_ns: Api<Pod> = Api::namespaced(client.clone(), "absent");
        let absent = status(
            no_ns
                .create(&PostParams::default(), &pod("x", json!({})))
                .await
                .expect_err("no namespace"),
        );
        assert_eq!(absent.code, 404);

        // A stale resourceVersion is a 409 Conflict.
        let mut stale = created.clone();
        stale.metadata.labels = Some([("x".to_owned(), "y".to_owned())].into());
        pods.replace("web-1", &PostParams::default(), &stale).await.expect("first update");
        let conflict =
            status(pods.replace("web-1", &PostParams::default(), &stale).await.expect_err("stale"));
        assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

        // Cluster-scoped kinds.
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": "agent-1", "labels": {"zone": "a"}}}),
        )
        .expect("node");
        nodes.create(&PostParams::default(), &node).await.expect("create node");
        assert_eq!(nodes.list(&by("zone=a")).await.expect("nodes").items.len(), 1);
    });
    // Malformed bodies are 400 (protobuf included); unknown media types 415.
    let path = "/api/v1/namespaces/default/pods";
    let (code, body) =
        http(server.port, "POST", path, Some(("application/json", "{not json"))).expect("answer");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"reason\":\"BadRequest\""), "{body}");
    let (code, _) =
        http(server.port, "POST", path, Some(("application/yaml", "a: [b"))).expect("answer");
    assert_eq!(code, 400);
    let (code, _) =
        http(server.port, "POST", path, Some(("application/vnd.kubernetes.protobuf", "x")))
            .expect("answer");
    assert_eq!(code, 400);
    let (code, _) =
        http(server.port, "POST", path, Some(("application/x-protobuf", "x"))).expect("answer");
    assert_eq!(code, 415);
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-yaml\nspec:\n  containers:\n  - name: a\n    image: busybox\n";
    let (code, body) =
        http(server.port, "POST", path, Some(("application/yaml", yaml))).expect("answer");
    assert_eq!(code, 201, "{body}");
    let (code, _) =
        http(server.port, "PUT", "/api/v1/namespaces/default/pods", None).expect("answer");
    assert_eq!(code, 405);
}

#[test]
fn discovery_and_meta_endpoints() {
    let etcd = Etcd::start();
    // The cold-standby recipe's command line, with its mesos-cloud.conf.
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("mesos-cloud.conf");
    std::fs::write(&conf, "[mesos-cloud]\n  mesos-master = 127.0.0.1:5050\n")
        .expect("write the config");
    let server = ApiServer::start_with(
        &etcd,
        &[
            "--cloud-provider=mesos",
            &format!("--cloud-config={}", conf.display()),
            "--advertise-address=127.0.0.1",
        ],
    );
    for path in [
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps/v1",
        "/apis/coordination.k8s.io/v1",
        "/openapi/v2",
    ] {
        let (code, body) = http(server.port, "GET", path, None).expect("answer");
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, body) = http(server.port, "GET", "/api/v1", None).expect("answer");
    for want in [
        "\"pods/binding\"",
        "\"pods/status\"",
        "\"nodes/status\"",
        "\"replicationcontrollers/scale\"",
        "\"events\"",
        "\"endpoints\"",
    ] {
        assert!(body.contains(want), "{want} missing from /api/v1");
    }
    let (_, body) = http(server.port, "GET", "/apis", None).expect("answer");
    assert!(body.contains("\"apps\"") && body.contains("coordination.k8s.io"), "{body}");
    // /openapi/v2 as JSON: a definition per served kind, found by its GVK.
    let (_, body) = http(server.port, "GET", "/openapi/v2", None).expect("answer");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("openapi json");
    let deployment = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        serde_json::json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }])
    );
    assert_eq!(
        doc["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"]["type"],
        "integer"
    );
    assert!(doc["definitions"]["io.k8s.api.coordination.v1.Lease"].is_object());
    let (code, body) = http(server.port, "GET", "/apis/nope/v1/things", None).expect("answer");
    assert_eq!(code, 404, "{body}");
}

#[test]
fn watch_from_resource_version_then_gone_after_compaction() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    runtime().block_on(async {
        let client = server.client();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let first = pods
            .create(&PostParams::default(), &pod("w-1", json!({"app": "w"})))
            .await
            .expect("create");
        let rv = first.metadata.resource_version.clone().expect("rv");
        pods.create(&PostParams::default(), &pod("w-2", json!({"app": "other"})))
            .await
            .expect("create");
        let patch = json!({"metadata": {"labels": {"seen": "yes"}}});
        pods.patch("w-1", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
        pods.delete("w-1", &DeleteParams::default()).await.expect("delete");

        // From `rv`: the later changes to app=w pods, in order.
        let params = WatchParams::default().labels("app=w").timeout(5);
        let mut stream = pods.watch(&params, &rv).await.expect("watch").boxed();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
                .await
                .expect("event in time");
            match ev.expect("stream ok").expect("not ended") {
                WatchEvent::Modified(p) => {
                    seen.push(format!("MODIFIED {}", p.metadata.name.unwrap_or_default()))
                }
                WatchEvent::Deleted(p) => {
                    seen.push(format!("DELETED {}", p.metadata.name.unwrap_or_default()))
                }
                WatchEvent::Added(p) => {
                    seen.push(format!("ADDED {}", p.metadata.name.unwrap_or_default()))
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(e) => panic!("watch error {e:?}"),
            }
        }
        assert_eq!(seen, ["MODIFIED w-1", "DELETED w-1"]);

        // Live events reach a watcher started now; bookmarks arrive too.
        let now_rv = pods
            .list(&ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("list rv");
        let params = WatchParams { bookmarks: true, ..WatchParams::default() }.timeout(20);
        let mut live = pods.watch(&params, &now_rv).await.expect("watch").boxed();
        pods.create(&PostParams::default(), &pod("w-3", json!({}))).await.expect("create");
        let (mut added, mut bookmark) = (false, false);
        while !(added && bookmark) {
            let ev = tokio::time::timeout(Duration::from_secs(10), live.try_next())
                .await
                .expect("event in time");
            match ev.expect("stream ok").expect("not ended") {
                WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("w-3") => added = true,
                WatchEvent::Bookmark(b) => {
                    assert!(b.metadata.resource_version.parse::<i64>().is_ok());
                    bookmark = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }

        // After compaction, a watch from the old revision is 410 Gone.
        let newest =
            pods.create(&PostParams::default(), &pod("w-4", json!({}))).await.expect("create");
        let newest_rv: i64 =
            newest.metadata.resource_version.as_deref().and_then(|r| r.parse().ok()).expect("rv");
        compact_etcd(&etcd, newest_rv);
        let mut old =
            pods.watch(&WatchParams::default().timeout(5), &rv).await.expect("watch").boxed();
        let ev =
            tokio::time::timeout(Duration::from_secs(10), old.try_next()).await.expect("in time");
        match ev.expect("stream ok").expect("an event") {
            WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
            other => panic!("expected 410, got {other:?}"),
        }
    });
}

#[test]
fn bind_status_patches_and_graceful_delete() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    runtime().block_on(async {
        let client = server.client();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(&PostParams::default(), &pod("b-1", json!({}))).await.expect("create");

        // Binding sets spec.nodeName exactly once.
        let binding: Binding = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": { "name": "b-1" },
            "target": { "apiVersion": "v1", "kind": "Node", "name": "agent-1" },
        }))
        .expect("binding");
        let _: serde_json::Value =
            pods.create_subresource("binding", "b-1", &PostParams::default(), &binding).await.expect("bind");
        let bound = pods.get("b-1").await.expect("get");
        assert_eq!(bound.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("agent-1"));
        let again = pods
            .create_subresource::<Binding, serde_json::Value>("binding", "b-1", &PostParams::default(), &binding)
            .await
            .expect_err("second bind");
        assert_eq!(status(again).code, 409);

        // Status changes only the status; spec changes through /status are ignored.
        let status_patch = json!({"status": {"phase": "Running", "podIP": "10.1.2.3"}, "spec": {"nodeName": "elsewhere"}});
        let running = pods.patch_status("b-1", &PatchParams::default(), &Patch::Merge(&status_patch)).await.expect("status");
        assert_eq!(running.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
        assert_eq!(running.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("agent-1"));
        // ... and the main resource does not change the status.
        let main_patch = json!({"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Failed"}});
        let labelled = pods.patch("b-1", &PatchParams::default(), &Patch::Merge(&main_patch)).await.expect("patch");
        assert_eq!(labelled.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));

        // The three patch types.
        let json_patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}},
            {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.26"},
        ]))
        .expect("json patch");
        let patched = pods.patch("b-1", &PatchParams::default(), &Patch::<()>::Json(json_patch)).await.expect("json patch");
        assert_eq!(patched.spec.as_ref().map(|s| s.containers[0].image.clone()), Some(Some("nginx:1.26".into())));
        let strategic = json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}});
        let patched = pods.patch("b-1", &PatchParams::default(), &Patch::Strategic(&strategic)).await.expect("strategic");
        let containers = patched.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        assert_eq!(containers.len(), 1, "containers merged by name");
        assert_eq!(containers[0].image.as_deref(), Some("nginx:1.27"));
        assert_eq!(containers[0].termination_message_path.as_deref(), Some("/dev/termination-log"));

        // Deployments: strategic merge on the template, generation bumps.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]}]}}},
        }))
        .expect("deployment");
        let d = deployments.create(&PostParams::default(), &d).await.expect("create deployment");
        assert_eq!(d.metadata.generation, Some(1));
        assert_eq!(d.spec.replicas, Some(1));
        let env_patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}}}});
        let d = deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&env_patch)).await.expect("patch");
        assert_eq!(d.metadata.generation, Some(2));
        let env = d.spec.template.spec.map(|s| s.containers[0].env.clone().unwrap_or_default()).unwrap_or_default();
        assert_eq!(env.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        let scale = deployments.get_scale("web").await.expect("scale");
        assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
        let scale_patch = json!({"spec": {"replicas": 3}});
        deployments.patch_scale("web", &PatchParams::default(), &Patch::Merge(&scale_patch)).await.expect("scale");
        assert_eq!(deployments.get("web").await.expect("get").spec.replicas, Some(3));

        // A bound pod is deleted gracefully, then at once with grace 0.
        pods.delete("b-1", &DeleteParams::default()).await.expect("delete");
        let terminating = pods.get("b-1").await.expect("still there");
        assert!(terminating.metadata.deletion_timestamp.is_some());
        assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
        pods.delete("b-1", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await.expect("force");
        assert_eq!(status(pods.get("b-1").await.expect_err("gone")).code, 404);

        // Finalizers hold deletion until removed.
        let mut held = pod("held", json!({}));
        held.metadata.finalizers = Some(vec!["km.io/test".into()]);
        pods.create(&PostParams::default(), &held).await.expect("create");
        pods.delete("held", &DeleteParams::default()).await.expect("delete");
        assert!(pods.get("held").await.expect("held").metadata.deletion_timestamp.is_some());
        let release = json!({"metadata": {"finalizers": null}});
        pods.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.expect("release");
        assert_eq!(status(pods.get("held").await.expect_err("gone")).code, 404);

        // Preconditions.
        pods.create(&PostParams::default(), &pod("pre", json!({}))).await.expect("create");
        let dp = DeleteParams { preconditions: Some(kube::api::Preconditions { uid: Some("wrong".into()), resource_version: None }), ..DeleteParams::default() };
        assert_eq!(status(pods.delete("pre", &dp).await.expect_err("precondition")).code, 409);
    });
}

/// Every kubectl on the machine (Debian's 1.20 and the Cloud SDK's 1.27 to 1.33) runs the user
/// workflow (tests/kubectl/scenario.sh) against the insecure port of a server with RBAC, each
/// against a fresh server;
/// each version's result is printed, and the failures are listed together.
#[test]
fn kubectl_scenario() {
    let kubectls = crate::support::all_kubectls();
    assert!(
        !kubectls.is_empty(),
        "no kubectl: this test needs kubectl 1.20 (Debian: kubernetes-client, unpacked by scripts/install-deps.sh)"
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kubectl/scenario.sh");
    let mut failed = Vec::new();
    for k in &kubectls {
        let etcd = Etcd::start();
        // RBAC on: the insecure port acts as a superuser, the scenario's --as users do not.
        let server = ApiServer::start_with(&etcd, &["--authorization-mode=RBAC"]);
        // The controllers beside it, for the rollout step.
        let mut cm_cmd = std::process::Command::new(crate::support::km_bin());
        cm_cmd.arg("controller-manager").arg(format!("--master={}", server.url())).arg("--port=0");
        let cm_log = tempfile::NamedTempFile::new().expect("log file");
        let _controllers =
            crate::support::process::Proc::spawn("km controller-manager", cm_cmd, cm_log.path());
        let bin = tempfile::tempdir().expect("bin dir");
        std::os::unix::fs::symlink(k, bin.path().join("kubectl")).expect("symlink kubectl");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(server.url())
            .env("KM_KUBECTL_DIR", bin.path())
            .env("KM_ROLLOUT", "1")
            .output()
            .expect("run the kubectl scenario");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The script's first line on stderr names the client version.
        let version =
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or_default().to_owned();
        if out.status.success() && text.contains("all steps passed") {
            eprintln!("{} ({version}): all steps passed", k.display());
        } else {
            eprintln!("{} ({version}): FAILED", k.display());
            failed.push(format!(
                "{}:\n{text}\n--- apiserver log:\n{}",
                k.display(),
                server.proc.log()
            ));
        }
    }
    assert!(failed.is_empty(), "the kubectl scenario failed with:\n{}", failed.join("\n\n"));
}

/// HTTPS on the secure port with rustls, bearer tokens from --token-auth-file (401 without a
/// known token), and RBAC: a member of system:masters may do anything, a user nothing but
/// what a binding gives (403 naming user, verb and resource until then), km scheduler's user
/// what its bootstrap role gives.
#[test]
fn secure_port_with_tokens_and_rbac() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "s3cret,admin,1,\"system:masters\"\njane-token,jane,2\nsched-token,system:km-scheduler,3\n",
    )
    .expect("token file");
    let secure = SecureApiServer::start(
        &etcd,
        &[&format!("--token-auth-file={}", tokens.display()), "--authorization-mode=RBAC"],
    );
    let (port, server, ca) = (secure.port, &secure.server, secure.file("ca.crt"));
    let kubeconfig = |token: &str| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: km\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: km\n  context:\n    cluster: km\n    user: u\ncurrent-context: km\n"
        )
    };
    let client_for = |token: &str| {
        let config = serde_yaml_from(&kubeconfig(token));
        async move {
            let options = kube::config::KubeConfigOptions::default();
            let config =
                kube::Config::from_custom_kubeconfig(config, &options).await.expect("kubeconfig");
            kube::Client::try_from(config).expect("client")
        }
    };
    runtime().block_on(async {
        let good: Api<Namespace> = Api::all(client_for("s3cret").await);
        let list = good.list(&ListParams::default()).await.expect("list over https with a token");
        assert!(list.items.iter().any(|n| n.metadata.name.as_deref() == Some("default")));
        let bad: Api<Namespace> = Api::all(client_for("wrong").await);
        let err = status(bad.list(&ListParams::default()).await.expect_err("bad token"));
        assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));

        let jane = client_for("jane-token").await;
        let err = status(
            Api::<Namespace>::all(jane.clone()).list(&ListParams::default()).await.expect_err("403"),
        );
        assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            err.message,
            "namespaces is forbidden: User \"jane\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
        );
        let jane_pods: Api<Pod> = Api::namespaced(jane.clone(), "default");
        assert_eq!(status(jane_pods.list(&ListParams::default()).await.expect_err("403")).code, 403);
        // A binding to the bootstrap `view` role in default lets her read pods there.
        let admin = client_for("s3cret").await;
        let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
            Api::namespaced(admin.clone(), "default");
        let binding = obj(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": "jane-views" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane" }],
        }));
        bindings.create(&PostParams::default(), &binding).await.expect("binding");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match jane_pods.list(&ListParams::default()).await {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert_eq!(status(e).code, 403);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the binding never took effect: {e}"),
            }
        }
        let err = status(
            jane_pods.create(&PostParams::default(), &pod("p", json!({}))).await.expect_err("view"),
        );
        assert_eq!(err.code, 403, "view does not create");
        // She may not grant herself more than she holds.
        let jane_bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
            Api::namespaced(jane.clone(), "default");
        let err = status(jane_bindings.create(&PostParams::default(), &binding).await.expect_err("no"));
        assert_eq!(err.code, 403);

        // km scheduler's user: pods and nodes everywhere, bindings, no secrets.
        let sched = client_for("sched-token").await;
        Api::<Pod>::all(sched.clone()).list(&ListParams::default()).await.expect("pods");
        Api::<Node>::all(sched.clone()).list(&ListParams::default()).await.expect("nodes");
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::all(sched);
        assert_eq!(status(secrets.list(&ListParams::default()).await.expect_err("no")).code, 403);
    });
    // The insecure port still answers without credentials.
    assert_eq!(http(server.port, "GET", "/api/v1/namespaces", None).map(|(c, _)| c), Some(200));
}

fn serde_yaml_from(text: &str) -> kube::config::Kubeconfig {
    kube::config::Kubeconfig::from_yaml(text).expect("kubeconfig parses")
}

fn obj<T: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

/// The remaining kinds: generic CRUD, their subresources and selectors.
#[test]
fn other_kinds() {
    use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{
        ConfigMap, Endpoints, Event, ReplicationController, Secret, Service,
    };

    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    runtime().block_on(async {
        let client = server.client();
        let pp = PostParams::default();

        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        let lease: Lease = obj(json!({"metadata": {"name": "km-scheduler"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}));
        let created = leases.create(&pp, &lease).await.expect("lease");
        let mut taken = created.clone();
        taken.spec.as_mut().expect("spec").holder_identity = Some("b".into());
        leases.replace("km-scheduler", &pp, &taken).await.expect("take over");
        let stale = status(leases.replace("km-scheduler", &pp, &created).await.expect_err("stale lease"));
        assert_eq!(stale.code, 409);

        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        cms.create(&pp, &obj(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}}))).await.expect("configmap");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let secret = secrets.create(&pp, &obj(json!({"metadata": {"name": "s"}, "data": {"k": "dmFsdWU="}}))).await.expect("secret");
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));

        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        for (name, kind) in [("e1", "Pod"), ("e2", "Node")] {
            let ev = obj(json!({"metadata": {"name": name}, "involvedObject": {"kind": kind, "name": "x"}, "reason": "Scheduled", "type": "Normal"}));
            events.create(&pp, &ev).await.expect("event");
        }
        let pod_events = events.list(&ListParams::default().fields("involvedObject.kind=Pod")).await.expect("events");
        assert_eq!(pod_events.items.len(), 1);

        let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
        eps.create(&pp, &obj(json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 80}]}]})))
            .await
            .expect("endpoints");

        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        let svc = svcs
            .create(&pp, &obj(json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}})))
            .await
            .expect("service");
        let spec = svc.spec.expect("spec");
        assert!(spec.cluster_ip.as_deref().is_some_and(|ip| ip.starts_with("10.10.10.")), "{:?}", spec.cluster_ip);
        assert!(spec.ports.expect("ports")[0].node_port.is_some_and(|p| (30000..=32767).contains(&p)));

        let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}});
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
        rss.create(&pp, &obj(json!({"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}})))
            .await
            .expect("replicaset");
        let scale = json!({"spec": {"replicas": 4}});
        rss.patch_scale("rs", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale rs");
        assert_eq!(rss.get("rs").await.expect("rs").spec.replicas, Some(4));
        let status_patch = json!({"status": {"replicas": 4, "readyReplicas": 2}});
        let rs = rss.patch_status("rs", &PatchParams::default(), &Patch::Merge(&status_patch)).await.expect("rs status");
        assert_eq!(rs.status.and_then(|s| s.ready_replicas), Some(2));

        let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
        let ds = dss
            .create(&pp, &obj(json!({"metadata": {"name": "ds"}, "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template}})))
            .await
            .expect("daemonset");
        assert_eq!(ds.spec.update_strategy.and_then(|u| u.type_).as_deref(), Some("RollingUpdate"));

        let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
        rcs.create(&pp, &obj(json!({"metadata": {"name": "rc"}, "spec": {"template": template}}))).await.expect("rc");
        let rc_scale = rcs.get_scale("rc").await.expect("rc scale");
        assert_eq!(rc_scale.status.map(|s| s.selector), Some(Some("app=x".into())));
    });
}

/// Writes that race on one object all land unless they named a resourceVersion: a binding and
/// a storm of status and metadata patches (a scheduler binding while an executor reports).
#[test]
fn concurrent_writes_without_preconditions_all_land() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    runtime().block_on(async {
        let client = server.client();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let created =
            pods.create(&PostParams::default(), &pod("race", json!({}))).await.expect("create");
        let binding: Binding = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": { "name": "race" },
            "target": { "apiVersion": "v1", "kind": "Node", "name": "agent-1" },
        }))
        .expect("binding");
        let mut writes = Vec::new();
        for i in 0..30 {
            let status_pods = pods.clone();
            writes.push(tokio::spawn(async move {
                let status = json!({"status": {"message": format!("report {i}")}});
                status_pods
                    .patch_status("race", &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .map(drop)
            }));
            let pods = pods.clone();
            writes.push(tokio::spawn(async move {
                let meta = json!({"metadata": {"annotations": {format!("a{i}"): "x"}}});
                pods.patch("race", &PatchParams::default(), &Patch::Merge(&meta)).await.map(drop)
            }));
        }
        let bind = {
            let pods = pods.clone();
            tokio::spawn(async move {
                pods.create_subresource::<Binding, serde_json::Value>(
                    "binding",
                    "race",
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map(drop)
            })
        };
        for w in writes {
            w.await.expect("join").expect("a patch without a precondition lands");
        }
        bind.await.expect("join").expect("the binding lands");
        let p = pods.get("race").await.expect("get");
        assert_eq!(p.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("agent-1"));
        assert_eq!(p.metadata.annotations.as_ref().map(|a| a.len()), Some(30));
        // A write naming an old resourceVersion is still refused as stale.
        let mut stale = created.clone();
        stale.metadata.labels = Some([("late".to_owned(), "yes".to_owned())].into());
        let err = pods.replace("race", &PostParams::default(), &stale).await.expect_err("stale");
        assert_eq!(status(err).code, 409);
    });
}

/// Every kubectl on the machine writes built-in kinds in protobuf (1.27 and later ask for it
/// too): create, scale, label and delete work with each, and a protobuf request means what its
/// JSON twin means (`--replicas=0` stays 0).
#[test]
fn every_kubectl_creates_and_reads_through_protobuf() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    let url = server.url();
    let kubectls = crate::support::kubectls();
    assert!(
        !kubectls.is_empty(),
        "no kubectl on this machine (scripts/install-deps.sh unpacks 1.20)"
    );
    for (i, k) in kubectls.iter().enumerate() {
        let run = |args: &[&str]| {
            let (ok, out) = crate::support::kubectl(k, &url, args);
            assert!(
                ok,
                "{} {args:?}: {out}\n--- apiserver log:\n{}",
                k.display(),
                server.proc.log()
            );
            out
        };
        let (d, cm, s) = (format!("web{i}"), format!("cm{i}"), format!("s{i}"));
        run(&["create", "deployment", &d, "--image=nginx", "--replicas=0"]);
        run(&["create", "configmap", &cm, "--from-literal=a=b"]);
        run(&["create", "secret", "generic", &s, "--from-literal=p=q"]);
        let got = run(&["get", "deployment", &d, "-o", "jsonpath={.spec.replicas}"]);
        assert_eq!(got.trim(), "0", "{}: --replicas=0 is not 'unset'", k.display());
        run(&["scale", "deployment", &d, "--replicas=2"]);
        run(&["label", "deployment", &d, "tier=front"]);
        let got = run(&[
            "get",
            "deployment",
            &d,
            "-o",
            "jsonpath={.spec.replicas} {.metadata.labels.tier}",
        ]);
        assert_eq!(got.trim(), "2 front", "{}", k.display());
        let got = run(&["get", "configmap", &cm, "-o", "jsonpath={.data.a}"]);
        assert_eq!(got.trim(), "b");
        let got = run(&["get", "secret", &s, "-o", "jsonpath={.data.p}"]);
        assert_eq!(got.trim(), "cQ==", "base64 of q");
        run(&["delete", "deployment", &d]);
    }
}

/// One object read in JSON and in protobuf is the same object; a protobuf watch is a stream of
/// length-prefixed WatchEvents; a protobuf body that is not one is refused with a clear 400.
#[test]
fn protobuf_and_json_answers_agree() {
    use km_apiserver::protobuf;
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    let rt = runtime();
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(server.client(), "default");
        pods.create(&PostParams::default(), &pod("p", json!({"app": "web"})))
            .await
            .expect("create");
        let http = reqwest::Client::new();
        let item = format!("{}/api/v1/namespaces/default/pods/p", server.url());
        let get = |accept: &'static str| {
            let (http, item) = (http.clone(), item.clone());
            async move {
                let r = http.get(&item).header("Accept", accept).send().await.expect("GET");
                let ct = r.headers()["content-type"].to_str().unwrap_or_default().to_owned();
                (ct, r.bytes().await.expect("body"))
            }
        };
        let (ct, json_body) = get("application/json").await;
        assert_eq!(ct, "application/json");
        let (ct, proto_body) = get("application/vnd.kubernetes.protobuf, */*").await;
        assert_eq!(ct, protobuf::MEDIA_TYPE);
        assert!(proto_body.starts_with(b"k8s\0"));
        let from_json: serde_json::Value = serde_json::from_slice(&json_body).expect("JSON");
        assert_eq!(protobuf::decode(&proto_body).expect("protobuf"), from_json);

        // An error is a Status in protobuf too.
        let missing = http
            .get(format!("{}/api/v1/namespaces/default/pods/none", server.url()))
            .header("Accept", protobuf::MEDIA_TYPE)
            .send()
            .await
            .expect("GET");
        assert_eq!(missing.status(), 404);
        let status = protobuf::decode(&missing.bytes().await.expect("body")).expect("a Status");
        assert_eq!(
            (status["kind"].as_str(), status["reason"].as_str()),
            (Some("Status"), Some("NotFound"))
        );

        // A watch in protobuf.
        let rv = from_json["metadata"]["resourceVersion"].as_str().expect("rv").to_owned();
        let watch = http
            .get(format!(
                "{}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}",
                server.url()
            ))
            .header("Accept", "application/vnd.kubernetes.protobuf;stream=watch")
            .send()
            .await
            .expect("watch");
        assert_eq!(watch.headers()["content-type"], protobuf::WATCH_MEDIA_TYPE);
        let mut labelled = pods.get("p").await.expect("get");
        labelled.metadata.labels.get_or_insert_default().insert("tier".into(), "front".into());
        pods.replace("p", &PostParams::default(), &labelled).await.expect("replace");
        let mut stream = watch.bytes_stream();
        let mut buf = Vec::new();
        let frame = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if buf.len() >= 4 {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() >= 4 + len {
                        return buf[4..4 + len].to_vec();
                    }
                }
                buf.extend_from_slice(&stream.next().await.expect("open").expect("bytes"));
            }
        })
        .await
        .expect("a frame in time");
        use prost::Message as _;
        let event = k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent::decode(frame.as_slice())
            .expect("a meta.v1.WatchEvent");
        assert_eq!(event.r#type.as_deref(), Some("MODIFIED"));
        let obj = protobuf::decode(&event.object.and_then(|o| o.raw).expect("raw")).expect("pod");
        assert_eq!(obj["metadata"]["labels"]["tier"], "front");

        // Bytes that are not a protobuf body.
        let bad = http
            .post(format!("{}/api/v1/namespaces/default/configmaps", server.url()))
            .header("Content-Type", protobuf::MEDIA_TYPE)
            .body("{\"kind\":\"ConfigMap\"}")
            .send()
            .await
            .expect("POST");
        assert_eq!(bad.status(), 400);
        let text = bad.text().await.expect("body");
        assert!(
            text.contains("could not be decoded as protobuf") && text.contains("magic"),
            "{text}"
        );
    });
}

/// `resourceVersionMatch=Exact` lists the state at that revision from etcd; once etcd has
/// compacted it away, the list is 410 naming the revision asked for and the current one.
#[test]
fn exact_lists_read_the_past_until_it_is_compacted() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    let put = |data: &str, method: &str, path: &str| {
        let body = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"cm\"}},\"data\":{{\"v\":\"{data}\"}}}}"
        );
        let (code, text) =
            http(server.port, method, path, Some(("application/json", &body))).expect("answer");
        assert!(code == 200 || code == 201, "{code}: {text}");
        let obj: serde_json::Value = serde_json::from_str(&text).expect("json");
        obj["metadata"]["resourceVersion"].as_str().expect("rv").parse::<i64>().expect("number")
    };
    let first = put("one", "POST", "/api/v1/namespaces/default/configmaps");
    let second = put("two", "PUT", "/api/v1/namespaces/default/configmaps/cm");
    let list = |rv: i64| {
        http(
            server.port,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?resourceVersion={rv}&resourceVersionMatch=Exact"),
            None,
        )
        .expect("answer")
    };
    let (code, text) = list(first);
    assert_eq!(code, 200, "{text}");
    let old: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(old["items"][0]["data"]["v"], "one", "{old}");
    assert_eq!(old["metadata"]["resourceVersion"], first.to_string());
    compact_etcd(&etcd, second);
    let (code, text) = list(first);
    assert_eq!(code, 410, "{text}");
    assert!(text.contains(&format!("too old resource version: {first} (")), "{text}");
}

/// `/metrics` counts requests by verb, resource and code under kube-apiserver's names, the
/// watches open, and the time of every etcd operation.
#[test]
fn metrics_count_requests_watches_and_etcd() {
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    let rt = runtime();
    rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(server.client(), "default");
        pods.create(&PostParams::default(), &pod("m", json!({}))).await.expect("create");
        pods.list(&ListParams::default()).await.expect("list");
        let missing = pods.get("none").await;
        assert!(missing.is_err());
        let http = reqwest::Client::new();
        let watch = http
            .get(format!("{}/api/v1/namespaces/default/pods?watch=true", server.url()))
            .send()
            .await
            .expect("watch");
        assert_eq!(watch.status(), 200);
        let metrics = || async {
            http.get(format!("{}/metrics", server.url()))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        };
        let labels = |verb: &str, scope: &str, code: &str| {
            format!(
                "apiserver_request_total{{verb=\"{verb}\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"{scope}\",code=\"{code}\"}} 1"
            )
        };
        let text = metrics().await;
        for want in [
            labels("POST", "namespace", "201"),
            labels("LIST", "namespace", "200"),
            labels("GET", "resource", "404"),
            "apiserver_longrunning_requests{verb=\"WATCH\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"namespace\"} 1".to_owned(),
            "etcd_request_duration_seconds_count{operation=\"create\",type=\"pods\"}".to_owned(),
            "apiserver_request_duration_seconds_bucket{".to_owned(),
        ] {
            assert!(text.contains(&want), "missing {want} in:\n{text}");
        }
        // The watch closes: the gauge comes back to 0.
        drop(watch);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = metrics().await;
            if text.contains("apiserver_longrunning_requests{verb=\"WATCH\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"namespace\"} 0") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the watch is still counted:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// The `kubernetes` Service in `default` has the first ClusterIP, and its Endpoints are the
/// API servers alive: one stopped with SIGTERM leaves at once (its lease would last a minute),
/// one killed with -9 drops out when its lease runs out.
#[test]
fn the_kubernetes_service_lists_the_live_api_servers() {
    let etcd = Etcd::start();
    let short =
        ["--identity-lease-duration-seconds=3", "--identity-lease-renew-interval-seconds=1"];
    let long =
        ["--identity-lease-duration-seconds=60", "--identity-lease-renew-interval-seconds=1"];
    let mut a = ApiServer::start_with(&etcd, &short);
    let mut b = ApiServer::start_with(&etcd, &long);
    let endpoints = |via: u16| {
        let (code, text) =
            http(via, "GET", "/api/v1/namespaces/default/endpoints/kubernetes", None)
                .unwrap_or_default();
        if code != 200 {
            return Vec::new();
        }
        let eps: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let mut ports: Vec<u16> = eps["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["ports"][0]["port"].as_u64())
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        ports.sort_unstable();
        ports
    };
    let wait_for = |via: u16, mut want: Vec<u16>, what: &str| {
        want.sort_unstable();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = endpoints(via);
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: endpoints {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(a.port, vec![a.port, b.port], "both servers");
    let (code, text) = http(a.port, "GET", "/api/v1/namespaces/default/services/kubernetes", None)
        .expect("answer");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"clusterIP\":\"10.10.10.1\""), "{text}");
    b.proc.signal("TERM");
    assert!(b.proc.wait_timeout(Duration::from_secs(30)).is_some(), "b stops on SIGTERM");
    wait_for(a.port, vec![a.port], "b left on SIGTERM, well before its lease would run out");
    let c = ApiServer::start_with(&etcd, &short);
    wait_for(c.port, vec![a.port, c.port], "c joined");
    a.proc.kill();
    wait_for(c.port, vec![c.port], "after kill -9 of a, its lease runs out");
}

/// Server-side apply through kube-rs (a client that is not kubectl): an apply creates, records
/// its manager, conflicts with another manager's field (409 naming both), takes it over when
/// forced, and removes what it stops applying; an ordinary update is recorded under the
/// client's User-Agent; a dry run stores nothing.
#[test]
fn server_side_apply_records_managers_and_conflicts() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let etcd = Etcd::start();
    let server = ApiServer::start(&etcd);
    let rt = runtime();
    rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
        let applied = |data: serde_json::Value| {
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cfg" }, "data": data })
        };
        let managers = |cm: &ConfigMap| -> Vec<String> {
            let mut out: Vec<String> = cm
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e.manager.clone().unwrap_or_default(),
                        e.operation.clone().unwrap_or_default()
                    )
                })
                .collect();
            out.sort();
            out
        };
        let ci = PatchParams::apply("ci");
        let cm = cms
            .patch("cfg", &ci, &Patch::Apply(applied(json!({"a": "1", "b": "2"}))))
            .await
            .expect("apply creates");
        assert_eq!(managers(&cm), ["ci/Apply"]);

        // Another manager changes "a" with an ordinary merge patch.
        let edit = PatchParams { field_manager: Some("editor".into()), ..Default::default() };
        cms.patch("cfg", &edit, &Patch::Merge(json!({"data": {"a": "9"}}))).await.expect("edit");

        let err = cms
            .patch("cfg", &ci, &Patch::Apply(applied(json!({"a": "1", "b": "2"}))))
            .await
            .expect_err("conflict");
        let st = status(err);
        assert_eq!(st.code, 409);
        assert_eq!(st.reason, "Conflict");
        assert_eq!(
            st.message,
            "Apply failed with 1 conflict: conflict with \"editor\" using v1: .data.a"
        );

        // Dropping "b" and not touching "a" is no conflict; "b" goes.
        let cm = cms
            .patch("cfg", &ci, &Patch::Apply(applied(json!({"c": "3"}))))
            .await
            .expect("apply without a");
        let data = cm.data.clone().unwrap_or_default();
        assert_eq!(data.get("a").map(String::as_str), Some("9"), "the editor's field stays");
        assert!(!data.contains_key("b"), "{data:?}");
        assert_eq!(data.get("c").map(String::as_str), Some("3"));

        // A dry run answers the outcome and stores nothing.
        let mut dry = PatchParams::apply("ci").force();
        dry.dry_run = true;
        let answer = cms
            .patch("cfg", &dry, &Patch::Apply(applied(json!({"a": "1", "c": "3"}))))
            .await
            .expect("dry run");
        assert_eq!(answer.data.unwrap_or_default().get("a").map(String::as_str), Some("1"));
        let stored = cms.get("cfg").await.expect("get");
        assert_eq!(stored.data.clone().unwrap_or_default().get("a").map(String::as_str), Some("9"));

        let cm = cms
            .patch("cfg", &PatchParams::apply("ci").force(), &Patch::Apply(applied(json!({"a": "1", "c": "3"}))))
            .await
            .expect("forced");
        assert_eq!(cm.data.unwrap_or_default().get("a").map(String::as_str), Some("1"));
        let stored = cms.get("cfg").await.expect("get");
        assert_eq!(managers(&stored), ["ci/Apply"], "the editor owned only a, which moved");

        // An update without fieldManager is recorded under the User-Agent's product name.
        let http = reqwest::Client::new();
        let r = http
            .patch(format!("{}/api/v1/namespaces/default/configmaps/cfg", server.url()))
            .header("Content-Type", "application/merge-patch+json")
            .header("User-Agent", "my-tool/2.1 (linux)")
            .body(r#"{"data":{"d":"4"}}"#)
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 200);
        let stored = cms.get("cfg").await.expect("get");
        assert_eq!(managers(&stored), ["ci/Apply", "my-tool/Update"]);

        // An apply patch without a manager is refused.
        let r = http
            .patch(format!("{}/api/v1/namespaces/default/configmaps/cfg", server.url()))
            .header("Content-Type", "application/apply-patch+yaml")
            .body("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n")
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap_or_default();
        assert!(text.contains("fieldManager: Required value"), "{text}");
    });
}

/// Client certificates (--client-ca-file): a certificate signed by the authority is its
/// Common Name's user in its Organizations' groups (kubectl with --client-certificate); one
/// from another authority is refused in the handshake; a request without one is a 401.
#[test]
fn client_certificates_name_users_and_groups() {
    let etcd = Etcd::start();
    let secure = SecureApiServer::start(&etcd, &["--authorization-mode=RBAC"]);
    secure.client_certificate("jane", "/O=devs/O=oncall/CN=jane");
    // Mallory claims system:masters with a certificate of her own authority.
    let mallory = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other-ca -keyout other.key -out other.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj '/O=system:masters/CN=mallory' -keyout mallory.key -out mallory.csr 2>/dev/null
openssl x509 -req -in mallory.csr -CA other.crt -CAkey other.key -CAcreateserial -days 1 -extfile client.cnf -out mallory.crt 2>/dev/null
"#;
    let made = std::process::Command::new("bash")
        .arg("-c")
        .arg(mallory)
        .current_dir(std::path::Path::new(&secure.file("")))
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let kubectl = crate::support::all_kubectls().into_iter().last().expect("a kubectl");
    let run = |who: Option<&str>, args: &[&str]| {
        let auth = who.map(|w| secure.as_certificate(w)).unwrap_or_default();
        secure.kubectl(&kubectl, &auth, args)
    };
    let (ok, text) = run(Some("jane"), &["get", "pods", "-n", "default"]);
    assert!(!ok);
    assert!(
        text.contains("pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{text}"
    );
    let (ok, text) = run(Some("mallory"), &["get", "pods", "-n", "default"]);
    assert!(!ok && !text.contains("forbidden") && !text.contains("No resources"), "{text}");
    // Without credentials: a 401, on which kubectl asks for a user name (stdin is empty).
    let (ok, text) = run(None, &["get", "pods", "-n", "default"]);
    assert!(!ok && (text.contains("Unauthorized") || text.contains("Username")), "{text}");
    // The group from her certificate's Organization gets `view` in default.
    let binding = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"devs-view"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"oncall"}]}"#;
    let created = http(
        secure.server.port,
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        Some(("application/json", binding)),
    );
    assert_eq!(created.map(|(c, _)| c), Some(201));
    let allowed = crate::support::process::wait_until(Duration::from_secs(30), || {
        run(Some("jane"), &["get", "pods", "-n", "default"]).0
    });
    assert!(allowed, "{}", run(Some("jane"), &["get", "pods", "-n", "default"]).1);
    let (_, text) = run(Some("jane"), &["auth", "can-i", "create", "pods", "-n", "default"]);
    assert_eq!(text.trim(), "no");
}

/// ServiceAccount tokens: `kubectl create token` (a TokenRequest) gives a token that
/// authenticates on the secure port as system:serviceaccount:<ns>:<name> (403 until a binding
/// names the account, then allowed); a token outlives neither its account nor a forgery.
#[test]
fn service_account_tokens_authenticate_their_account() {
    let etcd = Etcd::start();
    let secure = SecureApiServer::start(&etcd, &["--authorization-mode=RBAC"]);
    let server = &secure.server;
    // `kubectl create token` exists from 1.24: the newest kubectl on the machine.
    let kubectl = crate::support::all_kubectls().into_iter().last().expect("a kubectl");
    let home = tempfile::tempdir().expect("home");
    let kubectl_insecure = |args: &[&str]| {
        let out = std::process::Command::new(&kubectl)
            .env("HOME", home.path())
            .arg(format!("--server={}", server.url()))
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    kubectl_insecure(&["create", "serviceaccount", "bot", "-n", "default"]);
    // Lifetimes shorter than 10 minutes, or not numbers, are refused with the reason.
    let path = "/api/v1/namespaces/default/serviceaccounts/bot/token";
    for (asked, why) in [("60", "less than 10 minutes"), ("\"1h\"", "a whole number of seconds")] {
        let body = format!("{{\"spec\":{{\"expirationSeconds\":{asked}}}}}");
        let answer = http(server.port, "POST", path, Some(("application/json", &body)));
        let (code, text) = answer.expect("an answer");
        assert_eq!(code, 422, "{text}");
        assert!(text.contains(why), "{text}");
    }
    let token = kubectl_insecure(&["create", "token", "bot", "-n", "default", "--duration=20m"]);
    assert_eq!(token.matches('.').count(), 2, "a JSON Web Token: {token}");
    let as_bot = |token: &str| {
        secure.kubectl(
            &kubectl,
            &[format!("--token={token}")],
            &["get", "configmaps", "-n", "default"],
        )
    };
    let (ok, text) = as_bot(&token);
    assert!(!ok, "{text}");
    assert!(
        text.contains("configmaps is forbidden: User \"system:serviceaccount:default:bot\" cannot list resource \"configmaps\""),
        "{text}"
    );
    kubectl_insecure(&[
        "create",
        "rolebinding",
        "bot-view",
        "--clusterrole=view",
        "--serviceaccount=default:bot",
        "-n",
        "default",
    ]);
    let allowed = crate::support::process::wait_until(Duration::from_secs(30), || as_bot(&token).0);
    assert!(allowed, "{}", as_bot(&token).1);
    // A tampered token is nobody.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (ok, text) = as_bot(&forged);
    assert!(!ok && (text.contains("Unauthorized") || text.contains("Username")), "{text}");
    // An account deleted and made again is another account: the old token is refused.
    kubectl_insecure(&["delete", "serviceaccount", "bot", "-n", "default"]);
    kubectl_insecure(&["create", "serviceaccount", "bot", "-n", "default"]);
    let (ok, text) = as_bot(&token);
    assert!(!ok && (text.contains("Unauthorized") || text.contains("Username")), "{text}");
}
