#!/usr/bin/env python3
"""The official Python Kubernetes client (Debian's python3-kubernetes) against km apiserver.

Usage: client.py http://127.0.0.1:PORT   (the insecure port; no authentication)

Creates a namespace, a ConfigMap and a Deployment; lists with label selectors;
watches the ConfigMap from a list's resourceVersion while patching it with a
strategic merge patch and a JSON merge patch; scales the Deployment through its
scale subresource; reads a missing object as a 404; deletes what it made.
One line per step on stdout; on anything unexpected, a message on stderr and
exit status 1.
"""

import os
import queue
import sys
import threading
import time

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

# Unique per run, so that runs against one server do not meet a Terminating namespace.
NS = f"py-client-{os.getpid()}"
LABELS = {"app": "py-web", "suite": "python-client"}
# Bounds every request, so a server that stops answering fails the run.
REQUEST_TIMEOUT = 20


class Failed(Exception):
    pass


def step(name, detail=""):
    print(f"step {name}: ok{' (' + detail + ')' if detail else ''}", flush=True)


def expect(cond, message):
    if not cond:
        raise Failed(message)


def deployment_body():
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "py-web", "labels": dict(LABELS)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "py-web"}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
            },
        },
    }


def watch_config_maps(core, resource_version, events, stop):
    """Puts (type, name, data) for every event of the namespace's ConfigMaps on `events`."""
    w = watch.Watch()
    try:
        for event in w.stream(
            core.list_namespaced_config_map,
            NS,
            resource_version=resource_version,
            timeout_seconds=15,
            _request_timeout=REQUEST_TIMEOUT,
        ):
            obj = event["object"]
            events.put((event["type"], obj.metadata.name, dict(obj.data or {})))
            if stop.is_set():
                w.stop()
    except Exception as e:  # reported by the waiting side
        events.put(("ERROR", repr(e), {}))
    finally:
        events.put(("END", "", {}))


def wait_for_event(events, kind, name, want, deadline, seen):
    """Takes events until one of `kind` for `name` whose data holds `want`."""
    while True:
        left = deadline - time.monotonic()
        expect(left > 0, f"no {kind} event for {name} with {want} in time; saw {seen}")
        try:
            ev = events.get(timeout=left)
        except queue.Empty:
            continue
        seen.append(ev)
        expect(
            ev[0] not in ("ERROR", "END"),
            f"the watch (GET ...?watch=True, as this client spells it) ended before the {kind} "
            f"event: {seen}",
        )
        etype, ename, data = ev
        if etype == kind and ename == name and all(data.get(k) == v for k, v in want.items()):
            return


def run(url):
    config = client.Configuration()
    config.host = url
    config.verify_ssl = False
    api = client.ApiClient(config)
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    t = {"_request_timeout": REQUEST_TIMEOUT}

    # A leftover namespace from an earlier run against the same server would make create 409.
    ns = core.create_namespace({"metadata": {"name": NS}}, **t)
    expect(ns.metadata.name == NS, f"namespace create answered {ns.metadata.name!r}")
    step("create-namespace", NS)

    cm = core.create_namespaced_config_map(
        NS,
        {"metadata": {"name": "py-config", "labels": dict(LABELS)}, "data": {"color": "blue"}},
        **t,
    )
    expect(cm.data == {"color": "blue"}, f"configmap create answered data {cm.data!r}")
    expect(bool(cm.metadata.resource_version), "configmap create answered no resourceVersion")
    step("create-configmap", f"resourceVersion {cm.metadata.resource_version}")

    dep = apps.create_namespaced_deployment(NS, deployment_body(), **t)
    expect(dep.spec.replicas == 1, f"deployment create answered replicas {dep.spec.replicas!r}")
    expect(dep.metadata.uid, "deployment create answered no uid")
    step("create-deployment", f"uid {dep.metadata.uid}")

    selector = "app=py-web,suite=python-client"
    deps = apps.list_namespaced_deployment(NS, label_selector=selector, **t)
    names = [d.metadata.name for d in deps.items]
    expect(names == ["py-web"], f"deployments with {selector}: {names}")
    none = apps.list_namespaced_deployment(NS, label_selector="app=other", **t)
    expect(none.items == [], f"deployments with app=other: {[d.metadata.name for d in none.items]}")
    # No controller manager runs here, so no pods exist: the list is empty but well formed.
    pods = core.list_namespaced_pod(NS, label_selector="app in (py-web)", **t)
    expect(pods.items == [], f"pods with app in (py-web): {[p.metadata.name for p in pods.items]}")
    expect(bool(pods.metadata.resource_version), "pod list has no resourceVersion")
    step("list-with-selectors", f"deployments {names}, pods {len(pods.items)}")

    cms = core.list_namespaced_config_map(NS, **t)
    rv = cms.metadata.resource_version
    expect(bool(rv), "configmap list has no resourceVersion")
    events, stop = queue.Queue(), threading.Event()
    watcher = threading.Thread(
        target=watch_config_maps, args=(core, rv, events, stop), daemon=True
    )
    watcher.start()
    step("watch-started", f"from resourceVersion {rv}")

    # Events after `rv` reach the watch whether it connects before or after these patches.
    patched = core.patch_namespaced_config_map(
        "py-config", NS, {"data": {"color": "green", "size": "L"}}, **t
    )
    expect(
        patched.data == {"color": "green", "size": "L"},
        f"strategic merge patch answered data {patched.data!r}",
    )
    step("patch-strategic-merge", "color=green size=L")

    # The generated method picks its own content type (strategic merge for a dict), so the
    # JSON merge patch goes through the API client with the content type set by hand; a null
    # removes a key.
    merged = api.call_api(
        "/api/v1/namespaces/{namespace}/configmaps/{name}",
        "PATCH",
        path_params={"namespace": NS, "name": "py-config"},
        header_params={
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
        },
        body={"data": {"color": "red", "size": None}},
        response_type="V1ConfigMap",
        _return_http_data_only=True,
        _request_timeout=REQUEST_TIMEOUT,
    )
    expect(merged.data == {"color": "red"}, f"JSON merge patch answered data {merged.data!r}")
    step("patch-json-merge", "color=red, size removed")

    seen = []
    deadline = time.monotonic() + 20
    wait_for_event(events, "MODIFIED", "py-config", {"color": "green", "size": "L"}, deadline, seen)
    wait_for_event(events, "MODIFIED", "py-config", {"color": "red"}, deadline, seen)
    expect("size" not in seen[-1][2], f"the last MODIFIED event still has size: {seen[-1]}")
    stop.set()
    step("watch-saw-modified", f"{len(seen)} events: {[(e[0], e[2]) for e in seen]}")

    scale = apps.patch_namespaced_deployment_scale("py-web", NS, {"spec": {"replicas": 3}}, **t)
    expect(scale.spec.replicas == 3, f"scale patch answered replicas {scale.spec.replicas!r}")
    got = apps.read_namespaced_deployment("py-web", NS, **t)
    expect(got.spec.replicas == 3, f"the deployment reads replicas {got.spec.replicas!r} after scale")
    step("scale-deployment", "replicas 3 via the scale subresource")

    # A JSON patch (a list body) on the deployment itself.
    got = apps.patch_namespaced_deployment(
        "py-web", NS, [{"op": "replace", "path": "/spec/replicas", "value": 2}], **t
    )
    expect(got.spec.replicas == 2, f"JSON patch answered replicas {got.spec.replicas!r}")
    step("patch-deployment-json-patch", "replicas 2")

    try:
        core.read_namespaced_config_map("no-such-config", NS, **t)
        raise Failed("reading a missing configmap did not fail")
    except ApiException as e:
        expect(e.status == 404, f"reading a missing configmap: status {e.status}, body {e.body}")
    step("missing-is-404")

    apps.delete_namespaced_deployment("py-web", NS, **t)
    core.delete_namespaced_config_map("py-config", NS, **t)
    try:
        core.read_namespaced_config_map("py-config", NS, **t)
        raise Failed("the deleted configmap can still be read")
    except ApiException as e:
        expect(e.status == 404, f"reading the deleted configmap: status {e.status}, body {e.body}")
    left = apps.list_namespaced_deployment(NS, label_selector=selector, **t)
    expect(left.items == [], f"deployments left after delete: {[d.metadata.name for d in left.items]}")
    core.delete_namespace(NS, **t)
    step("delete", "deployment, configmap, namespace")
    watcher.join(timeout=REQUEST_TIMEOUT)


def main():
    if len(sys.argv) != 2:
        print("usage: client.py SERVER_URL", file=sys.stderr)
        return 2
    try:
        run(sys.argv[1])
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except ApiException as e:
        print(
            f"FAILED: unexpected API error {e.status} {e.reason}\n"
            f"headers: {dict(e.headers or {})}\nbody: {e.body}",
            file=sys.stderr,
        )
        return 1
    print("all steps passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
