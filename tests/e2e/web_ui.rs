//! km mesos-master's web UI in headless Chromium, driven through WebDriver (Debian's
//! chromium and chromedriver, the fantoccini client): the page lists the agents, then a
//! framework and its running task as they appear, without a reload.
//!
//! With `KM_SCREENSHOTS=DIR` the tests save the pages as `DIR/master-ui.png`,
//! `DIR/master-ui-sandbox.png` and `DIR/scheduler-ui.png` (how
//! `docs/master-ui.png` is made: `KM_SCREENSHOTS=docs cargo nextest run -p km --test e2e
//! web_ui`).

use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::mesos::MesosMaster;
use crate::support::process::{Proc, wait_until};
use crate::support::{free_port, km_bin};

const WAIT: Duration = Duration::from_secs(30);

/// A chromedriver on a free port and a headless Chromium session through it.
async fn browser(dir: &std::path::Path) -> (Proc, Client) {
    let port = free_port();
    let mut cmd = Command::new("chromedriver");
    cmd.arg(format!("--port={port}"));
    let mut driver = Proc::spawn("chromedriver", cmd, &dir.join("chromedriver.log"));
    let up = wait_until(WAIT, || {
        assert!(driver.is_running(), "chromedriver exited: {}", driver.log());
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "chromedriver did not listen: {}", driver.log());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1300,900"] }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("a Chromium session: {e}\n{}", driver.log()));
    (driver, client)
}

/// The texts of the rows of table `id`.
async fn rows(c: &Client, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(found) = c.find_all(Locator::Css(&format!("#{table} tbody tr"))).await else {
        return out;
    };
    for row in found {
        if let Ok(t) = row.text().await {
            out.push(t);
        }
    }
    out
}

/// Waits until the page shows what `f` looks for.
async fn until<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::controller_manager::eventually(what, &String::new, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_page_follows_agents_frameworks_and_tasks_live() {
    let master = MesosMaster::start(&["--simulate-agents=2", "--allocation_interval=100ms"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_driver, c) = browser(dir.path()).await;
    c.goto(&format!("{}/", master.url())).await.expect("open the page");
    let agents = until("2 agents listed", || async {
        Some(rows(&c, "agents").await).filter(|r| r.len() == 2)
    })
    .await;
    assert!(agents[0].contains("sim-agent-0") && agents[0].contains("rack:r0"), "{agents:?}");
    assert!(rows(&c, "frameworks").await.is_empty());
    // Marks this page load: a reload would lose it.
    c.execute("window.kmLoaded = 'first-load'; return null;", vec![]).await.expect("mark");
    // A framework arrives and runs a task, while the page stays open.
    let mut cmd = Command::new(km_bin());
    cmd.args(["mesos-execute", &format!("--master=127.0.0.1:{}", master.port)])
        .args(["--name=ui-task", "--command=sleep 600"]);
    let _task = Proc::spawn("km mesos-execute", cmd, &dir.path().join("execute.log"));
    let task = until("the task RUNNING on the page", || async {
        rows(&c, "tasks").await.into_iter().find(|r| r.contains("TASK_RUNNING"))
    })
    .await;
    assert!(task.contains("ui-task") && task.contains("sim-agent-"), "{task}");
    let frameworks = rows(&c, "frameworks").await;
    assert!(
        frameworks.iter().any(|f| f.contains("km mesos-execute (ui-task)") && f.ends_with('1')),
        "{frameworks:?}"
    );
    // The cluster's bars take the task's 0.1 cpus as used.
    until("the task's cpus shown as used", || async {
        let bars = c.find(Locator::Id("bars")).await.ok()?.text().await.ok()?;
        bars.contains("cpus 0.1 used").then_some(())
    })
    .await;
    let mark = c.execute("return window.kmLoaded || null;", vec![]).await.expect("read the mark");
    assert_eq!(mark, json!("first-load"), "the page was not reloaded");
    let status = c.find(Locator::Id("status")).await.expect("status").text().await.expect("text");
    assert_eq!(status, "live");
    if let Ok(out) = std::env::var("KM_SCREENSHOTS") {
        let png = c.screenshot().await.expect("a screenshot");
        std::fs::write(std::path::Path::new(&out).join("master-ui.png"), png).expect("save it");
    }
    let _ = c.close().await;
}

/// A task on a real agent: clicking it on the master's page shows its stdout from the sandbox
/// (read through the master's `/agents/{id}/` views), and with "follow" a line the task prints
/// later appears too, without a reload. The views serve nothing outside the sandboxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_page_shows_a_tasks_stdout_and_follows_it() {
    let master = MesosMaster::start(&["--allocation_interval=100ms"]);
    let mut agent = crate::mesos_agent::Agent::start(&master);
    let agent_id = agent.registered().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let go = dir.path().join("go");
    let mut cmd = Command::new(km_bin());
    cmd.args(["mesos-execute", &format!("--master=127.0.0.1:{}", master.port)])
        .arg("--name=ui-output")
        .arg(format!(
            "--command=echo first-line-out; while [ ! -e {} ]; do sleep 0.1; done; echo later-line-out; sleep 600",
            go.display()
        ));
    let _task = Proc::spawn("km mesos-execute", cmd, &dir.path().join("execute.log"));

    // The views, as any client of the master sees them.
    let http = reqwest::Client::new();
    let view = |path: String| {
        let (http, url) = (http.clone(), format!("{}/agents/{agent_id}/{path}", master.url()));
        async move {
            let r = http.get(&url).send().await.expect("a view");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let slaves: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("{}/slaves", master.url()))
            .await
            .expect("slaves")
            .text()
            .await
            .expect("body"),
    )
    .expect("json");
    let pid = slaves["slaves"][0]["pid"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        pid,
        format!("slave(1)@127.0.0.1:{}", agent.port),
        "the agent's pid names where it is"
    );
    let (code, body) = view("files/read?path=/etc/passwd".into()).await;
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("root:"), "{body}");
    let (code, _) = view("metrics/snapshot".into()).await;
    assert_eq!(code, 404, "only state, flags and the files API are viewed");
    let missing =
        http.get(format!("{}/agents/no-such-agent/state", master.url())).send().await.expect("get");
    assert_eq!(missing.status().as_u16(), 404);

    let (_driver, c) = browser(dir.path()).await;
    c.goto(&format!("{}/", master.url())).await.expect("open the page");
    c.execute("window.kmLoaded = 'first-load'; return null;", vec![]).await.expect("mark");
    let row = until("the task RUNNING on the page", || async {
        let rows = c.find_all(Locator::Css("#tasks tbody tr")).await.ok()?;
        for r in rows {
            if r.text().await.ok()?.contains("TASK_RUNNING") {
                return Some(r);
            }
        }
        None
    })
    .await;
    row.click().await.expect("click the task");
    let sandbox_text =
        || async { c.find(Locator::Id("sandbox-out")).await.ok()?.text().await.ok() };
    until("the task's first line shown", || async {
        sandbox_text().await.filter(|t| t.contains("first-line-out"))
    })
    .await;
    std::fs::write(&go, "").expect("let the task go on");
    let shown = until("the later line followed", || async {
        sandbox_text().await.filter(|t| t.contains("later-line-out"))
    })
    .await;
    assert_eq!(shown.matches("first-line-out").count(), 1, "read on, not again: {shown}");
    if let Ok(out) = std::env::var("KM_SCREENSHOTS") {
        let png = c.screenshot().await.expect("a screenshot");
        std::fs::write(std::path::Path::new(&out).join("master-ui-sandbox.png"), png)
            .expect("save it");
    }
    let mark = c.execute("return window.kmLoaded || null;", vec![]).await.expect("read the mark");
    assert_eq!(mark, json!("first-load"), "the page was not reloaded");
    let _ = c.close().await;
    drop(agent);
}

/// km scheduler's page: a pod that does not fit is listed as pending with the matcher's
/// reason; once room is made it shows up as placed — in the same page, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_page_shows_why_a_pod_waits_and_then_where_it_went() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, PostParams};

    let c = crate::support::cluster::KmCluster::start(
        &["--simulate-agents=1", "--simulate-agent-resources=cpus:1;mem:2048;ports:[31000-31010]"],
        &[],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_driver, b) = browser(dir.path()).await;
    b.goto(&format!("http://127.0.0.1:{}/", c.scheduler_port)).await.expect("open the page");
    until("the page live", || async {
        let s = b.find(Locator::Id("status")).await.ok()?.text().await.ok()?;
        (s == "live").then_some(())
    })
    .await;
    b.execute("window.kmLoaded = 'first-load'; return null;", vec![]).await.expect("mark");
    let pods: Api<Pod> = Api::namespaced(c.client(), "default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "default" },
            "spec": { "containers": [{ "name": "c", "image": "i",
                "resources": { "requests": { "cpu": "600m", "memory": "64Mi" } } }] },
        }))
        .expect("pod")
    };
    pods.create(&PostParams::default(), &pod("first")).await.expect("create first");
    until("first placed", || async {
        rows(&b, "placed").await.into_iter().find(|r| r.contains("default/first"))
    })
    .await;
    pods.create(&PostParams::default(), &pod("second")).await.expect("create second");
    let waiting = until("second pending with the matcher's reason", || async {
        rows(&b, "pending")
            .await
            .into_iter()
            .find(|r| r.contains("default/second") && r.contains("cpus"))
    })
    .await;
    println!("pending on the page: {waiting}");
    if let Ok(out) = std::env::var("KM_SCREENSHOTS") {
        let png = b.screenshot().await.expect("a screenshot");
        std::fs::write(std::path::Path::new(&out).join("scheduler-ui.png"), png).expect("save it");
    }
    pods.delete("first", &DeleteParams::default()).await.expect("delete first");
    let placed = until("second placed", || async {
        rows(&b, "placed").await.into_iter().find(|r| r.contains("default/second"))
    })
    .await;
    assert!(placed.contains("sim-agent-0"), "{placed}");
    assert!(
        !rows(&b, "pending").await.iter().any(|r| r.contains("default/second")),
        "no longer pending"
    );
    let executors =
        b.find(Locator::Id("executors")).await.expect("executors").text().await.expect("text");
    assert!(executors.contains("sim-agent-0"), "{executors}");
    let flow = b.find(Locator::Id("flow")).await.expect("flow").text().await.expect("text");
    assert!(
        flow.contains("received") && flow.contains("used") && flow.contains("declined"),
        "{flow}"
    );
    let mark = b.execute("return window.kmLoaded || null;", vec![]).await.expect("read the mark");
    assert_eq!(mark, json!("first-load"), "the page was not reloaded");
    let _ = b.close().await;
}

/// The master's page with many agents and tasks: how long until it shows them all after
/// opening, and how long a new task takes to appear on it. `KM_UI_AGENTS` and `KM_UI_TASKS`
/// (20 and 200 here) set the size; `scripts/measure-ui.sh` runs it at 1,000 and 10,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_page_loads_and_updates_with_many_agents_and_tasks() {
    use crate::mesos_master::{call_json, command_task, next_event_of, subscribe};
    let size = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (agents, tasks) = (size("KM_UI_AGENTS", 20), size("KM_UI_TASKS", 200));
    let master = MesosMaster::start(&[
        &format!("--simulate-agents={agents}"),
        "--simulate-agent-resources=cpus:64;mem:65536;ports:[31000-32000]",
        "--allocation_interval=100ms",
    ]);
    let mut sub = subscribe(&master, json!({ "name": "many" })).await;
    let per_agent = tasks.div_ceil(agents);
    let mut launched = 0;
    while launched < tasks {
        let offers = next_event_of(&mut sub.records, "OFFERS").await;
        for offer in offers["offers"]["offers"].as_array().into_iter().flatten() {
            if launched >= tasks {
                break;
            }
            let n = per_agent.min(tasks - launched);
            let list: Vec<_> = (launched..launched + n)
                .map(|i| command_task(&format!("task-{i:05}"), &offer["agent_id"], 0.1))
                .collect();
            launched += n;
            let accept = json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": list}}]}});
            assert_eq!(call_json(&master, &sub, accept).await.status(), 202);
        }
    }
    // What the page's first answer costs the master: the snapshot of GET_STATE.
    let asked = std::time::Instant::now();
    let state = reqwest::Client::new()
        .post(format!("{}/api/v1", master.url()))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(r#"{"type":"GET_STATE"}"#)
        .send()
        .await
        .expect("GET_STATE")
        .bytes()
        .await
        .expect("the state");
    println!(
        "GET_STATE with {agents} agents and {tasks} tasks: {} KiB in {:.0} ms",
        state.len() / 1024,
        asked.elapsed().as_secs_f64() * 1e3
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_driver, b) = browser(dir.path()).await;
    let want = format!("{agents} agents · 1 frameworks · {tasks} tasks");
    let opened = std::time::Instant::now();
    b.goto(&format!("{}/", master.url())).await.expect("open the page");
    until("every agent and task on the page", || async {
        let counts = b.find(Locator::Id("counts")).await.ok()?.text().await.ok()?;
        (counts == want).then_some(())
    })
    .await;
    let loaded = opened.elapsed();
    let times = b.execute("return window.kmTimes;", vec![]).await.expect("the page's times");
    println!("master page, ms after opening: {times}");
    // One more task, on the next offer: how long until its row is there.
    let offers = next_event_of(&mut sub.records, "OFFERS").await;
    let offer = &offers["offers"]["offers"][0];
    let accept = json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [command_task("late-task", &offer["agent_id"], 0.1)]}}]}});
    let sent = std::time::Instant::now();
    assert_eq!(call_json(&master, &sub, accept).await.status(), 202);
    until("the new task on the page", || async {
        let found = b
            .execute("return !!document.querySelector('tr[data-task=\"late-task\"]');", vec![])
            .await
            .ok()?;
        (found == json!(true)).then_some(())
    })
    .await;
    let updated = sent.elapsed();
    println!(
        "master page, {agents} agents and {tasks} tasks: all shown {:.0} ms after opening; a new task shown {:.0} ms after its launch",
        loaded.as_secs_f64() * 1e3,
        updated.as_secs_f64() * 1e3
    );
    let _ = b.close().await;
}
