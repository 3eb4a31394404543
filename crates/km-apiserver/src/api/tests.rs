//! The verbs over the in-memory store: the semantics the HTTP layer and
//! the etcd e2e tests rely on, without processes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::{Api, ApiConfig, DeleteOptions, Mutation, Query};
use crate::error::ApiError;
use crate::registry::{Kind, lookup};
use crate::storage::{MemoryStorage, Storage};

fn pods() -> &'static Kind {
    lookup("", "v1", "pods").expect("pods")
}

fn services() -> &'static Kind {
    lookup("", "v1", "services").expect("services")
}

async fn api() -> Api<MemoryStorage> {
    let config = ApiConfig { bookmark_interval: Duration::from_millis(50), ..ApiConfig::default() };
    let api = Api::new(Arc::new(MemoryStorage::default()), config);
    api.bootstrap().await.expect("bootstrap");
    api
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
           "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})
}

fn query(pairs: &[(&str, &str)]) -> Query {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("resourceVersion")
}

async fn next_event(stream: &mut futures::stream::BoxStream<'static, bytes::Bytes>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("event in time")
        .expect("stream open");
    serde_json::from_slice(&line).expect("event json")
}

#[tokio::test]
async fn bind_sets_node_once() {
    let api = api().await;
    api.create(pods(), Some("default"), pod("p", json!({}))).await.expect("create");
    let binding = json!({"target": {"kind": "Node", "name": "n1"}});
    api.bind("default", "p", &binding).await.expect("bind");
    let bound = api.get(pods(), Some("default"), "p").await.expect("get");
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    let again = api
        .bind("default", "p", &json!({"target": {"name": "n2"}}))
        .await
        .expect_err("second bind");
    assert!(matches!(again, ApiError::Conflict { .. }), "{again:?}");
    assert!(matches!(api.bind("default", "nope", &binding).await, Err(ApiError::NotFound { .. })));
}

#[tokio::test]
async fn bind_copies_annotations_and_checks_the_uid() {
    let api = api().await;
    let created = api.create(pods(), Some("default"), pod("p", json!({}))).await.expect("create");
    let uid = created["metadata"]["uid"].as_str().expect("uid").to_owned();
    let wrong = json!({"metadata": {"uid": "other"}, "target": {"name": "n1"}});
    let err = api.bind("default", "p", &wrong).await.expect_err("uid precondition");
    assert!(matches!(err, ApiError::Conflict { .. }), "{err:?}");
    let binding = json!({
        "metadata": {"uid": uid, "annotations": {"k8s.mesosphere.io/taskId": "t1", "n": 1}},
        "target": {"kind": "Node", "name": "n1"}
    });
    api.bind("default", "p", &binding).await.expect("bind");
    let bound = api.get(pods(), Some("default"), "p").await.expect("get");
    assert_eq!(bound["metadata"]["annotations"]["k8s.mesosphere.io/taskId"], "t1");
    assert!(
        bound["metadata"]["annotations"].get("n").is_none(),
        "non-string values are not annotations"
    );
}

#[tokio::test]
async fn concurrent_unconditional_updates_all_land() {
    let api = Arc::new(api().await);
    api.create(pods(), Some("default"), pod("p", json!({}))).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let patch = json!({"metadata": {"annotations": {format!("a{i}"): "x"}}});
            let m = Mutation::Patch { content_type: crate::patch::MERGE_PATCH, patch };
            api.update(pods(), Some("default"), "p", None, m).await.map(drop)
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("update");
    }
    let p = api.get(pods(), Some("default"), "p").await.expect("get");
    assert_eq!(p["metadata"]["annotations"].as_object().map(|a| a.len()), Some(20));
}

#[tokio::test]
async fn watch_applies_selectors_as_transitions() {
    let api = api().await;
    let created =
        api.create(pods(), Some("default"), pod("p", json!({"app": "a"}))).await.expect("create");
    let q = query(&[("labelSelector", "app=a"), ("resourceVersion", &rv(&created).to_string())]);
    let mut stream = api.watch(pods(), Some("default"), &q).await.expect("watch");
    let relabel = |app: &str| Mutation::Patch {
        content_type: crate::patch::MERGE_PATCH,
        patch: json!({"metadata": {"labels": {"app": app}}}),
    };
    api.update(pods(), Some("default"), "p", None, relabel("b")).await.expect("out of selector");
    api.update(pods(), Some("default"), "p", None, relabel("a")).await.expect("back in");
    api.create(pods(), Some("default"), pod("other", json!({"app": "b"})))
        .await
        .expect("unrelated");
    api.delete(pods(), Some("default"), "p", &DeleteOptions::default()).await.expect("delete");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut stream).await;
        seen.push(format!(
            "{} {}",
            ev["type"].as_str().unwrap_or_default(),
            ev["object"]["metadata"]["name"].as_str().unwrap_or_default()
        ));
    }
    assert_eq!(seen, ["DELETED p", "ADDED p", "DELETED p"]);
}

// Paused time: the bookmark (every 50 ms) comes as soon as nothing else is left to do.
#[tokio::test(start_paused = true)]
async fn watch_without_version_starts_with_the_current_state_and_bookmarks() {
    let api = api().await;
    api.create(pods(), Some("default"), pod("a", json!({}))).await.expect("create");
    let q = query(&[("allowWatchBookmarks", "true")]);
    let mut stream = api.watch(pods(), None, &q).await.expect("watch");
    let first = next_event(&mut stream).await;
    assert_eq!(
        (first["type"].as_str(), first["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("a"))
    );
    let bookmark = next_event(&mut stream).await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert!(
        bookmark["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|r| r.parse::<i64>().is_ok())
    );
}

// Paused time: the bookmarks that come due while the watcher is not read are a fact of the
// test, not a race with the machine's speed.
#[tokio::test(start_paused = true)]
async fn a_bookmark_never_skips_events_still_queued_for_the_watcher() {
    let api = api().await;
    let q = query(&[("allowWatchBookmarks", "true")]);
    let mut stream = api.watch(pods(), None, &q).await.expect("watch");
    // Events pile up while the watcher is not read; bookmarks come due (every 50 ms) meanwhile:
    // the clock moves on by two of them and more before the stream is read.
    for i in 0..200 {
        api.create(pods(), Some("default"), pod(&format!("p{i}"), json!({})))
            .await
            .expect("create");
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (mut added, mut bookmarks, mut last_event, mut last_bookmark) = (0, 0, 0_i64, 0_i64);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while added < 200 {
        assert!(std::time::Instant::now() < deadline, "only {added} of 200 events arrived");
        let ev = next_event(&mut stream).await;
        let rv: i64 = ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_default();
        match ev["type"].as_str() {
            Some("ADDED") => {
                assert!(rv > last_bookmark, "event {rv} after a bookmark of {last_bookmark}");
                added += 1;
                last_event = rv;
            }
            Some("BOOKMARK") => {
                assert!(rv >= last_event, "bookmark {rv} before event {last_event}");
                last_bookmark = rv;
                bookmarks += 1;
            }
            other => panic!("unexpected {other:?}: {ev}"),
        }
    }
    // The bookmark that came due is taken among the queued events (the watcher picks either
    // when both are ready), so the order above was checked against one.
    assert!(bookmarks > 0, "no bookmark among the 200 events");
}

#[tokio::test]
async fn a_watch_timeout_too_large_for_a_deadline_means_none() {
    let api = api().await;
    api.create(pods(), Some("default"), pod("a", json!({}))).await.expect("create");
    let q = query(&[("timeoutSeconds", &u64::MAX.to_string())]);
    let mut stream = api.watch(pods(), None, &q).await.expect("watch");
    let first = next_event(&mut stream).await;
    assert_eq!(first["type"], "ADDED");
}

#[tokio::test]
async fn watch_from_a_compacted_revision_is_gone() {
    let api = api().await;
    let a = api.create(pods(), Some("default"), pod("a", json!({}))).await.expect("create");
    // The shared hub starts now: older revisions go to the store, compacted.
    let _hub = api
        .watch(pods(), None, &query(&[("resourceVersion", &rv(&a).to_string())]))
        .await
        .expect("watch");
    let b = api.create(pods(), Some("default"), pod("b", json!({}))).await.expect("create");
    api.storage.compact(rv(&b)).await.expect("compact");
    let mut old =
        api.watch(pods(), None, &query(&[("resourceVersion", "1")])).await.expect("watch");
    let ev = next_event(&mut old).await;
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    // It names the revision asked for and the current one, for the client to re-list from.
    assert_eq!(
        ev["object"]["message"],
        format!("too old resource version: 1 ({})", rv(&b)),
        "{ev}"
    );
}

#[test]
fn list_options_are_checked_as_kubernetes_does() {
    use crate::api::{Start, list_options};
    let opts = |pairs: &[(&str, &str)], watch| list_options(pods(), &query(pairs), watch);
    let err = |pairs: &[(&str, &str)], watch| match opts(pairs, watch) {
        Err(e @ ApiError::Invalid { .. }) => e.to_string(),
        other => panic!("{pairs:?} should be refused, got {other:?}"),
    };
    // Lists.
    assert_eq!(opts(&[], false).unwrap().start, Start::Latest);
    assert_eq!(opts(&[("resourceVersion", "0")], false).unwrap().start, Start::Latest);
    assert_eq!(opts(&[("resourceVersion", "7")], false).unwrap().start, Start::NotOlderThan(7));
    assert_eq!(
        opts(&[("resourceVersion", "7"), ("resourceVersionMatch", "Exact")], false).unwrap().start,
        Start::Exact(7)
    );
    assert_eq!(
        err(&[("resourceVersionMatch", "Exact")], false),
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: \
         resourceVersionMatch is forbidden unless resourceVersion is provided"
    );
    assert!(
        err(&[("resourceVersion", "0"), ("resourceVersionMatch", "Exact")], false)
            .contains("resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"")
    );
    assert!(
        err(&[("resourceVersion", "1"), ("resourceVersionMatch", "Soon")], false)
            .contains("Unsupported value: \"Soon\"")
    );
    assert!(err(&[("sendInitialEvents", "true")], false).contains("forbidden for list"));
    assert!(
        err(&[("resourceVersion", "-5"), ("resourceVersionMatch", "Exact")], false)
            .contains("resourceVersion")
    );
    // Watches.
    let w = opts(&[], true).unwrap();
    assert!(w.initial_events && !w.initial_events_end, "the legacy start: the state first");
    let w = opts(&[("resourceVersion", "9")], true).unwrap();
    assert!(!w.initial_events, "from a revision, only changes");
    let streaming = [
        ("sendInitialEvents", "true"),
        ("resourceVersionMatch", "NotOlderThan"),
        ("allowWatchBookmarks", "true"),
    ];
    let w = opts(&streaming, true).unwrap();
    assert!(w.initial_events && w.initial_events_end);
    assert!(err(&streaming[..2], true).contains("allowWatchBookmarks"));
    assert!(
        err(&[("sendInitialEvents", "true"), ("allowWatchBookmarks", "true")], true)
            .contains("requires setting resourceVersionMatch to NotOlderThan")
    );
    assert!(
        err(&[("resourceVersion", "3"), ("resourceVersionMatch", "NotOlderThan")], true)
            .contains("forbidden for watch unless sendInitialEvents is provided")
    );
    let w = opts(&[("sendInitialEvents", "false"), ("resourceVersionMatch", "NotOlderThan")], true)
        .unwrap();
    assert!(!w.initial_events, "sendInitialEvents=false: changes only");
}

#[tokio::test]
async fn a_streaming_list_ends_its_initial_events_with_a_bookmark() {
    let api = api().await;
    api.create(pods(), Some("default"), pod("a", json!({}))).await.expect("create");
    api.create(pods(), Some("default"), pod("b", json!({}))).await.expect("create");
    let q = query(&[
        ("sendInitialEvents", "true"),
        ("resourceVersionMatch", "NotOlderThan"),
        ("allowWatchBookmarks", "true"),
    ]);
    let mut stream = api.watch(pods(), Some("default"), &q).await.expect("watch");
    let mut names = Vec::new();
    for _ in 0..2 {
        let ev = next_event(&mut stream).await;
        assert_eq!(ev["type"], "ADDED");
        names.push(ev["object"]["metadata"]["name"].as_str().unwrap_or_default().to_owned());
    }
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let end = next_event(&mut stream).await;
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    api.create(pods(), Some("default"), pod("c", json!({}))).await.expect("create");
    let next = next_event(&mut stream).await;
    assert_eq!(
        (next["type"].as_str(), next["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("c"))
    );
}

#[tokio::test]
async fn a_list_newer_than_the_store_is_a_timeout() {
    let api = api().await;
    let refused = api.list(pods(), None, &query(&[("resourceVersion", "999999")])).await;
    match refused {
        Err(e @ ApiError::Timeout(_)) => {
            assert!(e.to_string().starts_with("Too large resource version: 999999"), "{e}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn graceful_pod_deletion() {
    let api = api().await;
    // Unbound pods go at once.
    api.create(pods(), Some("default"), pod("unbound", json!({}))).await.expect("create");
    api.delete(pods(), Some("default"), "unbound", &DeleteOptions::default())
        .await
        .expect("delete");
    assert!(matches!(
        api.get(pods(), Some("default"), "unbound").await,
        Err(ApiError::NotFound { .. })
    ));
    // Bound pods wait for their node (a delete with grace 0).
    api.create(pods(), Some("default"), pod("bound", json!({}))).await.expect("create");
    api.bind("default", "bound", &json!({"target": {"name": "n1"}})).await.expect("bind");
    let opts = DeleteOptions { grace_period: Some(10), ..DeleteOptions::default() };
    let marked = api.delete(pods(), Some("default"), "bound", &opts).await.expect("delete");
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 10);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    // A grace period past the year 9999 is refused, not a panic or a wrapped date.
    let never = DeleteOptions { grace_period: Some(i64::MAX), ..DeleteOptions::default() };
    assert!(matches!(
        api.delete(pods(), Some("default"), "bound", &never).await,
        Err(ApiError::BadRequest(_))
    ));
    let now = DeleteOptions { grace_period: Some(0), ..DeleteOptions::default() };
    api.delete(pods(), Some("default"), "bound", &now).await.expect("confirm");
    assert!(matches!(
        api.get(pods(), Some("default"), "bound").await,
        Err(ApiError::NotFound { .. })
    ));
    // System namespaces stay.
    let ns = lookup("", "v1", "namespaces").expect("namespaces");
    assert!(matches!(
        api.delete(ns, None, "default", &DeleteOptions::default()).await,
        Err(ApiError::Forbidden(_))
    ));
}

#[tokio::test]
async fn list_pages_and_selectors() {
    let api = api().await;
    for i in 0..5 {
        api.create(pods(), Some("default"), pod(&format!("p{i}"), json!({"n": i.to_string()})))
            .await
            .expect("create");
    }
    let page = api.list(pods(), Some("default"), &query(&[("limit", "2")])).await.expect("list");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["metadata"]["remainingItemCount"], 3);
    let token = page["metadata"]["continue"].as_str().expect("continue").to_owned();
    let rest =
        api.list(pods(), Some("default"), &query(&[("continue", &token)])).await.expect("rest");
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(3));
    assert!(rest["metadata"].get("continue").is_none());
    let sel =
        api.list(pods(), None, &query(&[("labelSelector", "n in (1,3)")])).await.expect("selected");
    assert_eq!(sel["items"].as_array().map(Vec::len), Some(2));
    let bad =
        api.list(pods(), None, &query(&[("continue", "garbage")])).await.expect_err("bad token");
    assert!(matches!(bad, ApiError::BadRequest(_)));
}

#[tokio::test]
async fn services_get_and_release_addresses() {
    let api = api().await;
    let svc = |name: &str, ty: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"type": ty, "selector": {"app": "x"}, "ports": [{"port": 80}]}})
    };
    let a = api.create(services(), Some("default"), svc("a", "NodePort")).await.expect("create");
    let ip = a["spec"]["clusterIP"].as_str().expect("cluster ip").to_owned();
    assert!(ip.starts_with("10.0.0."), "{ip}");
    let node_port = a["spec"]["ports"][0]["nodePort"].as_i64().expect("node port");
    assert!((30000..=32767).contains(&node_port));
    assert_eq!(a["spec"]["sessionAffinity"], "None");
    // The same IP and port cannot be taken twice ...
    let mut taken = svc("b", "NodePort");
    taken["spec"]["clusterIP"] = json!(ip);
    let err = api.create(services(), Some("default"), taken.clone()).await.expect_err("ip taken");
    assert!(matches!(err, ApiError::Invalid { .. }), "{err:?}");
    // ... until the first service is deleted.
    api.delete(services(), Some("default"), "a", &DeleteOptions::default()).await.expect("delete");
    taken["spec"]["ports"][0]["nodePort"] = json!(node_port);
    let b =
        api.create(services(), Some("default"), taken).await.expect("reuse released ip and port");
    assert_eq!(b["spec"]["clusterIP"], ip.as_str());
    // Updates keep the address; an out-of-range IP is invalid.
    let update = Mutation::Patch {
        content_type: crate::patch::STRATEGIC_MERGE_PATCH,
        patch: json!({"metadata": {"labels": {"x": "y"}}}),
    };
    let b2 = api.update(services(), Some("default"), "b", None, update).await.expect("update");
    assert_eq!(b2["spec"]["clusterIP"], ip.as_str());
    let mut outside = svc("c", "ClusterIP");
    outside["spec"]["clusterIP"] = json!("192.168.0.1");
    assert!(matches!(
        api.create(services(), Some("default"), outside).await,
        Err(ApiError::Invalid { .. })
    ));
}

#[tokio::test]
async fn privileged_containers_follow_the_cluster_policy() {
    let privileged = |name: &str| {
        let mut p = pod(name, json!({}));
        p["spec"]["initContainers"] = json!([{"name": "i", "image": "busybox:1",
                                             "securityContext": {"privileged": true}}]);
        p
    };
    // Refused by default, as kube-apiserver does without --allow-privileged.
    let api = api().await;
    match api.create(pods(), Some("default"), privileged("p")).await {
        Err(e @ ApiError::Invalid { .. }) => assert_eq!(
            e.to_string(),
            "Pod \"p\" is invalid: spec.initContainers[0].securityContext.privileged: \
             Forbidden: disallowed by cluster policy"
        ),
        other => panic!("expected 422, got {other:?}"),
    }
    // A template that would make privileged pods is refused too, and so is an update that
    // makes a pod privileged.
    let deployments = lookup("apps", "v1", "deployments").expect("deployments");
    let template = privileged("t");
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": template["spec"]}}});
    let refused = api.create(deployments, Some("default"), deployment).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.to_string().contains(
            "spec.template.spec.initContainers[0].securityContext.privileged: Forbidden"
        )),
        "{refused:?}"
    );
    api.create(pods(), Some("default"), pod("plain", json!({}))).await.expect("plain pod");
    let patch = json!({"spec": {"containers": [{"name": "c", "image": "busybox:1",
                                                 "securityContext": {"privileged": true}}]}});
    let m = Mutation::Patch { content_type: crate::patch::MERGE_PATCH, patch };
    let refused = api.update(pods(), Some("default"), "plain", None, m).await;
    assert!(matches!(refused, Err(ApiError::Invalid { .. })), "{refused:?}");

    // Allowed with --allow-privileged=true.
    let config = ApiConfig { allow_privileged: true, ..ApiConfig::default() };
    let open = Api::new(Arc::new(MemoryStorage::default()), config);
    open.bootstrap().await.expect("bootstrap");
    let created = open.create(pods(), Some("default"), privileged("p")).await.expect("allowed");
    assert_eq!(created["spec"]["initContainers"][0]["securityContext"]["privileged"], true);
}

#[tokio::test]
async fn stored_objects_hold_no_nulls() {
    let api = api().await;
    let mut p = pod("p", json!({}));
    p["spec"]["initContainers"] = Value::Null;
    p["spec"]["containers"][0]["ports"] = Value::Null;
    p["metadata"]["annotations"] = json!({"a": null, "b": "x"});
    let created = api.create(pods(), Some("default"), p).await.expect("create");
    let text = serde_json::to_string(&created).expect("json");
    assert!(!text.contains("null"), "{text}");
    assert_eq!(created["metadata"]["annotations"], json!({"b": "x"}));
    let stored = api.get(pods(), Some("default"), "p").await.expect("get");
    assert!(!serde_json::to_string(&stored).expect("json").contains("null"));
}

#[tokio::test]
async fn statefulsets_and_disruption_budgets_are_served_defaulted_and_checked() {
    let api = api().await;
    let sts = lookup("apps", "v1", "statefulsets").expect("statefulsets");
    let pdbs = lookup("policy", "v1", "poddisruptionbudgets").expect("pdbs");
    let set = |policy: &str| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
               "spec": {"serviceName": "db", "podManagementPolicy": policy,
                        "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}},
                                     "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}})
    };
    let created = api.create(sts, Some("default"), set("Parallel")).await.expect("create");
    assert_eq!(created["spec"]["replicas"], 1);
    assert_eq!(
        created["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(created["spec"]["template"]["spec"]["restartPolicy"], "Always");
    let scale = api.get_scale(sts, Some("default"), "db").await.expect("scale");
    assert_eq!(scale["spec"]["replicas"], 1);
    let refused = api.create(sts, Some("default"), set("Sometimes")).await;
    assert!(
        refused.as_ref().is_err_and(|e| e
            .to_string()
            .contains("spec.podManagementPolicy: Unsupported value: \"Sometimes\"")),
        "{refused:?}"
    );

    let budget = |spec: Value| {
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
               "spec": spec})
    };
    api.create(
        pdbs,
        Some("default"),
        budget(json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "db"}}})),
    )
    .await
    .expect("a budget");
    for (spec, says) in [
        (json!({"minAvailable": 1, "maxUnavailable": 1}), "cannot be both set"),
        (json!({"maxUnavailable": "150%"}), "percentage between 0% and 100%"),
        (json!({"minAvailable": -1}), "greater than or equal to 0"),
    ] {
        let refused = api.create(pdbs, Some("default"), budget(spec.clone())).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.to_string().contains(says)),
            "{spec}: {refused:?}"
        );
    }
}
