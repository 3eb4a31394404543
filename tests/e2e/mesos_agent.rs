//! `km mesos-agent` registered with a real `km mesos-master`: a framework
//! gets the agent's resources offered, launches a command task on it, and
//! sees STARTING → RUNNING → FINISHED with acknowledgements.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::mesos::{MesosMaster, Records};
use crate::support::process::Proc;
use crate::support::{free_port, km_bin};

const JSON: &str = "application/json";
const WAIT: Duration = Duration::from_secs(20);

/// A `km mesos-agent` process with its own work_dir.
pub(crate) struct Agent {
    proc: Proc,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl Agent {
    pub(crate) fn start(master: &MesosMaster) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(km_bin());
        cmd.arg("mesos-agent")
            .arg(format!("--master=127.0.0.1:{}", master.port))
            .arg("--ip=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg("--hostname=agent-e2e")
            .arg(format!("--work_dir={}", dir.path().join("work").display()))
            .arg("--resources=cpus:2;mem:512;disk:1000;ports:[31000-31009]")
            .arg("--attributes=rack:r1");
        cmd.env("KM_LOG", "info,km_mesos_agent=debug");
        let proc = Proc::spawn("km mesos-agent", cmd, &dir.path().join("agent.log"));
        Agent { proc, port, dir }
    }

    async fn state(&self) -> Option<Value> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}/state", self.port)).await.ok()?;
        serde_json::from_slice(&resp.bytes().await.ok()?).ok()
    }

    /// Waits until the agent says it is registered; returns its id.
    pub(crate) async fn registered(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(s) = self.state().await
                && s["registered"] == true
            {
                return s["id"].as_str().unwrap_or_default().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("agent did not register; log:\n{}", self.proc.log());
    }
}

async fn post(url: &str, stream_id: Option<&str>, body: String) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Type", JSON)
        .header("Accept", JSON)
        .body(body);
    if let Some(id) = stream_id {
        req = req.header("Mesos-Stream-Id", id);
    }
    req.send().await.expect("request")
}

async fn next_event(records: &mut Records) -> Value {
    loop {
        let rec = records.next(WAIT).await.expect("an event before the stream ended");
        let v: Value = serde_json::from_slice(&rec).unwrap();
        if v["type"] != "HEARTBEAT" {
            return v;
        }
    }
}

#[tokio::test]
async fn command_task_runs_on_a_registered_agent() {
    let master = MesosMaster::start(&["--allocation_interval=100ms"]);
    let mut agent = Agent::start(&master);
    let agent_id = agent.registered().await;
    assert!(!agent_id.is_empty());

    let url = format!("{}/api/v1/scheduler", master.url());
    let subscribe = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "e2e"}}});
    let resp = post(&url, None, subscribe.to_string()).await;
    assert_eq!(resp.status(), 200);
    let stream_id = resp.headers()["Mesos-Stream-Id"].to_str().unwrap().to_owned();
    let mut records = Records::new(resp);
    let subscribed = next_event(&mut records).await;
    let framework_id = subscribed["subscribed"]["framework_id"].clone();

    let offer = loop {
        let ev = next_event(&mut records).await;
        if ev["type"] == "OFFERS" {
            let offers = ev["offers"]["offers"].as_array().cloned().unwrap_or_default();
            if let Some(o) =
                offers.into_iter().find(|o| o["agent_id"]["value"] == agent_id.as_str())
            {
                break o;
            }
        }
    };
    assert_eq!(offer["hostname"], "agent-e2e");
    let task = json!({
        "name": "hello", "task_id": {"value": "hello"}, "agent_id": offer["agent_id"],
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
        "command": {"value": "echo hello-from-e2e"}
    });
    let accept = json!({"type": "ACCEPT", "framework_id": framework_id, "accept": {"offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}]}});
    assert_eq!(post(&url, Some(&stream_id), accept.to_string()).await.status(), 202);

    let mut seen = Vec::new();
    while !seen.contains(&"TASK_FINISHED".to_owned()) {
        let ev = next_event(&mut records).await;
        if ev["type"] != "UPDATE" {
            continue;
        }
        let status = &ev["update"]["status"];
        assert_eq!(status["task_id"]["value"], "hello", "{ev}");
        seen.push(status["state"].as_str().unwrap().to_owned());
        if let Some(uuid) = status.get("uuid") {
            let ack = json!({"type": "ACKNOWLEDGE", "framework_id": framework_id, "acknowledge": {
                "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": uuid}});
            assert_eq!(post(&url, Some(&stream_id), ack.to_string()).await.status(), 202);
        }
    }
    assert_eq!(
        seen,
        ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"],
        "agent log:\n{}",
        agent.proc.log()
    );
    let runs = agent.dir.path().join(format!("work/slaves/{agent_id}"));
    assert!(runs.exists(), "sandboxes live under the agent id");
}

#[test]
fn bad_flags_name_the_flag_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(km_bin())
        .arg("mesos-agent")
        .arg("--master=127.0.0.1:1")
        .arg(format!("--work_dir={}", dir.path().display()))
        .arg("--resources=cpus:4;mem:lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--resources 'mem:lots'"), "{stderr}");
}

/// A JSON framework subscription on a master, for the tests below.
struct Framework {
    url: String,
    stream_id: String,
    framework_id: Value,
    records: Records,
}

impl Framework {
    async fn subscribe(master: &MesosMaster, info: Value) -> Framework {
        let url = format!("{}/api/v1/scheduler", master.url());
        let mut c = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}});
        if let Some(id) = info.get("id") {
            c["framework_id"] = id.clone();
        }
        let resp = post(&url, None, c.to_string()).await;
        assert_eq!(resp.status(), 200);
        let stream_id = resp.headers()["Mesos-Stream-Id"].to_str().unwrap().to_owned();
        let mut records = Records::new(resp);
        let subscribed = next_event(&mut records).await;
        assert_eq!(subscribed["type"], "SUBSCRIBED", "{subscribed}");
        let framework_id = subscribed["subscribed"]["framework_id"].clone();
        Framework { url, stream_id, framework_id, records }
    }

    async fn call(&self, mut c: Value) {
        c["framework_id"] = self.framework_id.clone();
        let resp = post(&self.url, Some(&self.stream_id), c.to_string()).await;
        assert_eq!(resp.status(), 202, "{c}");
    }

    /// Launches `sleep 600` as task `id` on the first offer and waits for TASK_RUNNING.
    async fn launch_sleeper(&mut self, id: &str) -> Value {
        let offer = loop {
            let ev = next_event(&mut self.records).await;
            if ev["type"] == "OFFERS" {
                break ev["offers"]["offers"][0].clone();
            }
        };
        let task = json!({
            "name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
            "command": {"value": "sleep 600"}
        });
        self.call(json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}]}}))
            .await;
        loop {
            let status = self.next_update().await;
            if status["state"] == "TASK_RUNNING" {
                return offer["agent_id"].clone();
            }
        }
    }

    /// The next UPDATE's status, acknowledged when it carries a uuid.
    async fn next_update(&mut self) -> Value {
        loop {
            let ev = next_event(&mut self.records).await;
            if ev["type"] != "UPDATE" {
                continue;
            }
            let status = ev["update"]["status"].clone();
            if let Some(uuid) = status.get("uuid") {
                self.call(json!({"type": "ACKNOWLEDGE", "acknowledge": {
                    "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": uuid}}))
                    .await;
            }
            return status;
        }
    }
}

#[tokio::test]
async fn killed_tasks_are_killed_and_a_dead_agent_loses_its_tasks() {
    let master = MesosMaster::start(&["--allocation_interval=100ms"]);
    let mut agent = Agent::start(&master);
    agent.registered().await;
    let mut fw = Framework::subscribe(&master, json!({"user": "root", "name": "loss"})).await;
    let agent_id = fw.launch_sleeper("doomed").await;
    fw.call(
        json!({"type": "KILL", "kill": {"task_id": {"value": "doomed"}, "agent_id": agent_id}}),
    )
    .await;
    let status = fw.next_update().await;
    assert_eq!(
        (status["task_id"]["value"].as_str(), status["state"].as_str()),
        (Some("doomed"), Some("TASK_KILLED"))
    );
    // A second task, then kill -9 of the agent: a non-checkpointing framework
    // hears TASK_LOST at once.
    fw.launch_sleeper("orphan").await;
    agent.proc.kill();
    let status = fw.next_update().await;
    assert_eq!(status["task_id"]["value"], "orphan");
    assert_eq!(status["state"], "TASK_LOST");
    assert_eq!(status["reason"], "REASON_AGENT_DISCONNECTED");
    assert_eq!(status["source"], "SOURCE_MASTER");
}

#[tokio::test]
async fn partition_aware_frameworks_see_unreachable_agents() {
    let master = MesosMaster::start(&[
        "--allocation_interval=100ms",
        "--agent_ping_timeout=200ms",
        "--max_agent_ping_timeouts=2",
    ]);
    let mut agent = Agent::start(&master);
    agent.registered().await;
    let info = json!({"user": "root", "name": "pa", "checkpoint": true,
        "capabilities": [{"type": "PARTITION_AWARE"}]});
    let mut fw = Framework::subscribe(&master, info).await;
    fw.launch_sleeper("far-away").await;
    agent.proc.signal("STOP");
    agent.proc.kill();
    let status = fw.next_update().await;
    assert_eq!(status["state"], "TASK_UNREACHABLE", "{status}");
    assert!(status.get("unreachable_time").is_some());
}

#[tokio::test]
async fn framework_failover_and_master_restart_keep_tasks() {
    let mut master = MesosMaster::start(&[]);
    let work = master.dir().join("master-work");
    drop(master);
    master = MesosMaster::start(&[
        "--allocation_interval=100ms",
        &format!("--work_dir={}", work.display()),
    ]);
    let mut agent = Agent::start(&master);
    agent.registered().await;
    let info =
        json!({"user": "root", "name": "keeper", "checkpoint": true, "failover_timeout": 300.0});
    let mut fw = Framework::subscribe(&master, info.clone()).await;
    let agent_id = fw.launch_sleeper("kept").await;
    let framework_id = fw.framework_id.clone();

    // Framework failover: a new subscription with the same id still owns the task.
    drop(fw);
    let mut again = info.clone();
    again["id"] = framework_id.clone();
    let mut fw = Framework::subscribe(&master, again.clone()).await;
    assert_eq!(fw.framework_id, framework_id);
    fw.call(json!({"type": "RECONCILE", "reconcile": {}})).await;
    let status = fw.next_update().await;
    assert_eq!(
        (status["task_id"]["value"].as_str(), status["state"].as_str()),
        (Some("kept"), Some("TASK_RUNNING"))
    );

    // Master restart: the registry brings back the framework, the agent
    // re-registers with its task, and reconciliation finds it running.
    drop(fw);
    master.restart();
    let mut fw = Framework::subscribe(&master, again).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        fw.call(json!({"type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "kept"}, "agent_id": agent_id}]}}))
            .await;
        match tokio::time::timeout(Duration::from_secs(1), fw.next_update()).await {
            Ok(status) => {
                assert_eq!(
                    status["state"],
                    "TASK_RUNNING",
                    "{status}\nmaster log:\n{}",
                    master.proc.log()
                );
                break;
            }
            // No answer while the agent has not re-registered: the master must not guess.
            Err(_) => assert!(
                Instant::now() < deadline,
                "agent never came back; agent log:\n{}",
                agent.proc.log()
            ),
        }
    }
}

#[tokio::test]
async fn mesos_execute_runs_a_command_to_its_end() {
    let master = MesosMaster::start(&["--allocation_interval=100ms"]);
    let mut agent = Agent::start(&master);
    agent.registered().await;
    let run = |command: &str| {
        Command::new(km_bin())
            .args(["mesos-execute", &format!("--master=127.0.0.1:{}", master.port), "--name=e2e"])
            .arg(format!("--command={command}"))
            .output()
            .expect("run km mesos-execute")
    };
    let ok = run("echo fine");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("TASK_RUNNING") && stdout.contains("TASK_FINISHED"), "{stdout}");
    let failed = run("exit 3");
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stdout).contains("TASK_FAILED"));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("task ended in TASK_FAILED"));
    let huge = Command::new(km_bin())
        .args(["mesos-execute", &format!("--master=127.0.0.1:{}", master.port), "--name=big"])
        .args(["--command=true", "--resources=cpus:64", "--offer_timeout_secs=2"])
        .output()
        .expect("run km mesos-execute");
    assert!(!huge.status.success());
    assert!(String::from_utf8_lossy(&huge.stderr).contains("no offer fit cpus:64"));
}

/// The agent's entry in the master's GET_AGENTS (JSON), if it is registered.
async fn agent_states(master: &MesosMaster) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1", master.url()))
        .header("Content-Type", JSON)
        .header("Accept", JSON)
        .body(json!({"type": "GET_AGENTS"}).to_string())
        .send()
        .await
        .expect("GET_AGENTS");
    serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_answers_pings_stays_and_a_frozen_one_is_found_out() {
    let master = MesosMaster::start(&["--agent_ping_timeout=500ms", "--max_agent_ping_timeouts=3"]);
    let mut agent = Agent::start(&master);
    let id = agent.registered().await;
    let registered_ns = |v: &Value| {
        v["get_agents"]["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["agent_info"]["id"]["value"] == id.as_str()))
            .map(|x| x["registered_time"]["nanoseconds"].as_i64().unwrap_or(0))
    };

    // Pinged every 500 ms, the agent answers: once it has been registered for
    // ten ping periods (by the master's own registration time) it is still there.
    let deadline = Instant::now() + WAIT;
    loop {
        let v = agent_states(&master).await;
        let since = registered_ns(&v).expect("the live agent stays registered");
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        if now_ns - since > 5_000_000_000 {
            break;
        }
        assert!(Instant::now() < deadline, "no answer from the master in time; {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!master.proc.log().contains("agent stopped answering"), "{}", master.proc.log());

    // Frozen, its connection stays open but nothing answers: the master
    // finds it out and takes it off its agents (unreachable).
    agent.proc.signal("STOP");
    let deadline = Instant::now() + WAIT;
    while registered_ns(&agent_states(&master).await).is_some() {
        assert!(Instant::now() < deadline, "the frozen agent was never found out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = master.proc.log();
    assert!(log.contains("agent stopped answering pings") && log.contains("agent unreachable"));
    agent.proc.signal("CONT");
}

/// The agent's files API, which the Mesos web UI and CLI read sandboxes with: a running task's
/// sandbox is listed and its stdout read (in parts, and its size), and no path outside the
/// sandboxes is served — neither through `..` nor through links the task made. Also the
/// agent's `/flags` and `/metrics/snapshot`, and the task in the master's `/master/tasks`.
#[tokio::test]
async fn sandbox_files_are_served_and_nothing_outside_them() {
    let master = MesosMaster::start(&["--allocation_interval=100ms"]);
    let mut agent = Agent::start(&master);
    let agent_id = agent.registered().await;
    let mut fw = Framework::subscribe(&master, json!({"user": "root", "name": "files"})).await;
    let offer = loop {
        let ev = next_event(&mut fw.records).await;
        if ev["type"] == "OFFERS" {
            break ev["offers"]["offers"][0].clone();
        }
    };
    let task = json!({
        "name": "talker", "task_id": {"value": "talker"}, "agent_id": offer["agent_id"],
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}}],
        "command": {"value": "echo hello-sandbox; ln -s /etc/passwd escape; ln -s / root; sleep 600"}
    });
    fw.call(json!({"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}]}}))
        .await;
    while fw.next_update().await["state"] != "TASK_RUNNING" {}
    let base = format!("http://127.0.0.1:{}", agent.port);
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move {
            let resp = reqwest::get(url).await.expect("GET");
            let code = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (code, text)
        }
    };
    let state: Value = serde_json::from_str(&get("/state".into()).await.1).expect("state");
    let dir = state["frameworks"][0]["executors"][0]["directory"]
        .as_str()
        .expect("the executor's sandbox directory")
        .to_owned();
    let q = |p: &str| form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>();
    // The task's output, once it has written it.
    let deadline = Instant::now() + WAIT;
    let listing = loop {
        let (code, body) = get(format!("/files/browse?path={}", q(&dir))).await;
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("a listing");
        let names: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                e["path"].as_str().map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
            })
            .collect();
        if names.iter().any(|n| n == "escape") || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = listing
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/stdout")))
        .cloned()
        .expect("stdout in the listing");
    assert_eq!(stdout["path"], format!("{dir}/stdout"));
    assert!(stdout["mode"].as_str().is_some_and(|m| m.starts_with("-rw")), "{stdout}");
    let (code, body) = get(format!("/files/read?path={}", q(&format!("{dir}/stdout")))).await;
    assert_eq!(code, 200, "{body}");
    let read: Value = serde_json::from_str(&body).expect("read");
    assert!(read["data"].as_str().is_some_and(|d| d.contains("hello-sandbox")), "{read}");
    assert_eq!(read["offset"], 0);
    let (_, body) =
        get(format!("/files/read?path={}&offset=-1", q(&format!("{dir}/stdout")))).await;
    let size: Value = serde_json::from_str(&body).expect("size");
    assert_eq!(size["data"], "");
    assert!(size["offset"].as_u64().is_some_and(|n| n >= "hello-sandbox\n".len() as u64), "{size}");
    let (_, body) =
        get(format!("/files/read?path={}&offset=6&length=7", q(&format!("{dir}/stdout")))).await;
    assert_eq!(serde_json::from_str::<Value>(&body).expect("part")["data"], "sandbox");
    // Nothing outside the sandboxes: not by `..`, not by absolute paths, not through links.
    for path in [
        format!("{dir}/../../../../../../../../etc/passwd"),
        "/etc/passwd".to_owned(),
        format!("{dir}/escape"),
        format!("{dir}/root/etc/passwd"),
    ] {
        let (code, body) = get(format!("/files/read?path={}", q(&path))).await;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(!body.contains("root:"), "{path} leaked: {body}");
    }
    let (code, _) = get(format!("/files/browse?path={}", q(&format!("{dir}/root")))).await;
    assert_eq!(code, 403);
    let (code, _) = get(format!("/files/read?path={}", q(&format!("{dir}/missing")))).await;
    assert_eq!(code, 404);
    let (code, body) = get(format!("/files/read?path={}", q(&dir))).await;
    assert_eq!((code, body.as_str()), (400, "Cannot read a directory"));
    let (code, _) = get("/files/read".into()).await;
    assert_eq!(code, 400);
    // The agent's flags and metrics.
    let flags: Value = serde_json::from_str(&get("/flags".into()).await.1).expect("flags");
    assert_eq!(flags["flags"]["hostname"], "agent-e2e");
    assert!(flags["flags"]["resources"].as_str().is_some_and(|r| r.contains("cpus:2")), "{flags}");
    let metrics: Value =
        serde_json::from_str(&get("/metrics/snapshot".into()).await.1).expect("metrics");
    assert_eq!(metrics["slave/registered"], 1.0);
    assert_eq!(metrics["slave/tasks_running"], 1.0);
    assert_eq!(metrics["slave/cpus_total"], 2.0);
    assert!(metrics["slave/cpus_used"].as_f64().is_some_and(|c| c >= 0.1), "{metrics}");
    // The master lists the task where the agent runs it.
    let tasks = reqwest::get(format!("{}/master/tasks", master.url()))
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("tasks");
    let tasks: Value = serde_json::from_slice(&tasks).expect("tasks JSON");
    assert_eq!(tasks["tasks"][0]["id"], "talker");
    assert_eq!(tasks["tasks"][0]["slave_id"], agent_id.as_str());
    assert_eq!(tasks["tasks"][0]["state"], "TASK_RUNNING");
}
