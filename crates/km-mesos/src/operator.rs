//! A client of the Mesos operator API (`/api/v1` on the master) and of the
//! legacy `/master/state` JSON that older tools (and the original Mesos
//! cloud provider) read.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use crate::codec::ContentType;
use crate::http_util::{self, CallError, RecordReader, StreamError};
use crate::v1::master::{Call, Event, Response, call, response};

/// The path of the operator endpoint on a master.
pub const OPERATOR_PATH: &str = "/api/v1";

/// An operator API client.
#[derive(Debug, Clone)]
pub struct Operator {
    client: reqwest::Client,
    stream_client: reqwest::Client,
    master: Url,
    content_type: ContentType,
}

impl Operator {
    /// A client of the master at `master` (`http://host:port`), speaking
    /// `content_type`, with `timeout` for each non-streaming call.
    pub fn new(
        master: Url,
        content_type: ContentType,
        timeout: Duration,
    ) -> Result<Self, CallError> {
        let build = |timeout: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10));
            if let Some(t) = timeout {
                b = b.timeout(t);
            }
            b.build().map_err(|source| CallError::Transport { url: master.to_string(), source })
        };
        Ok(Self {
            client: build(Some(timeout))?,
            stream_client: build(None)?,
            master: master.clone(),
            content_type,
        })
    }

    /// Sends a call and decodes the response.
    pub async fn call(&self, c: Call) -> Result<Response, CallError> {
        let ct = self.content_type;
        let url = http_util::endpoint(&self.master, OPERATOR_PATH);
        let (url, resp) =
            http_util::post(&self.client, url, ct, Some(ct), ct.encode(&c), |r| r).await?;
        let resp = http_util::expect_status(&url, resp, StatusCode::OK).await?;
        let body_ct = http_util::response_content_type(&resp).unwrap_or(ct);
        let body = resp
            .bytes()
            .await
            .map_err(|source| CallError::Transport { url: url.to_string(), source })?;
        body_ct
            .decode(&body)
            .map_err(|source| CallError::Decode { url: url.to_string(), source: Box::new(source) })
    }

    /// Sends a call that answers 202 without a body (TEARDOWN, MARK_AGENT_GONE, …).
    pub async fn call_accepted(&self, c: Call) -> Result<(), CallError> {
        let ct = self.content_type;
        let url = http_util::endpoint(&self.master, OPERATOR_PATH);
        let (url, resp) =
            http_util::post(&self.client, url, ct, Some(ct), ct.encode(&c), |r| r).await?;
        http_util::expect_status(&url, resp, StatusCode::ACCEPTED).await.map(drop)
    }

    /// GET_HEALTH.
    pub async fn get_health(&self) -> Result<bool, CallError> {
        let r = self.call(simple(call::Type::GetHealth)).await?;
        Ok(r.get_health.map(|h| h.healthy).unwrap_or(false))
    }

    /// GET_STATE: agents, frameworks, executors and tasks in one snapshot.
    pub async fn get_state(&self) -> Result<response::GetState, CallError> {
        let r = self.call(simple(call::Type::GetState)).await?;
        r.get_state.ok_or_else(|| self.missing("get_state"))
    }

    /// GET_AGENTS.
    pub async fn get_agents(&self) -> Result<response::GetAgents, CallError> {
        let r = self.call(simple(call::Type::GetAgents)).await?;
        r.get_agents.ok_or_else(|| self.missing("get_agents"))
    }

    /// GET_FRAMEWORKS.
    pub async fn get_frameworks(&self) -> Result<response::GetFrameworks, CallError> {
        let r = self.call(simple(call::Type::GetFrameworks)).await?;
        r.get_frameworks.ok_or_else(|| self.missing("get_frameworks"))
    }

    /// GET_TASKS.
    pub async fn get_tasks(&self) -> Result<response::GetTasks, CallError> {
        let r = self.call(simple(call::Type::GetTasks)).await?;
        r.get_tasks.ok_or_else(|| self.missing("get_tasks"))
    }

    /// SUBSCRIBE: a snapshot (SUBSCRIBED) followed by changes
    /// (AGENT_ADDED/REMOVED, TASK_ADDED/UPDATED, FRAMEWORK_*), heartbeats included.
    pub async fn subscribe(&self) -> Result<OperatorEvents, CallError> {
        let ct = self.content_type;
        let url = http_util::endpoint(&self.master, OPERATOR_PATH);
        let body = ct.encode(&simple(call::Type::Subscribe));
        let (url, resp) =
            http_util::post(&self.stream_client, url, ct, Some(ct), body, |r| r).await?;
        let resp = http_util::expect_status(&url, resp, StatusCode::OK).await?;
        let content_type = http_util::response_content_type(&resp).unwrap_or(ct);
        Ok(OperatorEvents { reader: RecordReader::new(resp), content_type })
    }

    /// The legacy `GET /master/state` JSON (follows redirects to the leader).
    pub async fn legacy_state(&self) -> Result<MasterState, CallError> {
        let mut url = http_util::endpoint(&self.master, "/master/state");
        for _ in 0..4 {
            let resp = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|source| CallError::Transport { url: url.to_string(), source })?;
            if resp.status() == StatusCode::TEMPORARY_REDIRECT {
                let loc = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or_default();
                url = url.join(loc).map_err(|e| CallError::Redirect {
                    url: url.to_string(),
                    problem: e.to_string(),
                })?;
                continue;
            }
            let resp = http_util::expect_status(&url, resp, StatusCode::OK).await?;
            let body = resp
                .bytes()
                .await
                .map_err(|source| CallError::Transport { url: url.to_string(), source })?;
            return serde_json::from_slice(&body).map_err(|e| CallError::Decode {
                url: url.to_string(),
                source: Box::new(crate::codec::DecodeError::Json(crate::json::JsonError::Syntax(
                    e,
                ))),
            });
        }
        Err(CallError::Redirect { url: url.to_string(), problem: "too many redirects".into() })
    }

    fn missing(&self, field: &str) -> CallError {
        CallError::Status {
            url: self.master.to_string(),
            status: StatusCode::OK,
            body: format!("response lacks the '{field}' payload"),
        }
    }
}

fn simple(ty: call::Type) -> Call {
    let mut c = Call::default();
    c.set_type(ty);
    c
}

/// The operator event stream.
pub struct OperatorEvents {
    reader: RecordReader,
    content_type: ContentType,
}

impl OperatorEvents {
    /// The next event; `Ok(None)` when the master closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, StreamError> {
        match self.reader.next().await? {
            Some(record) => Ok(Some(self.content_type.decode_event(&record)?)),
            None => Ok(None),
        }
    }
}

/// The parts of the legacy `/master/state` document km reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MasterState {
    /// Master ID.
    pub id: String,
    /// `master@ip:port`.
    pub pid: String,
    /// Master hostname.
    pub hostname: String,
    /// `master@ip:port` of the leader.
    pub leader: String,
    /// Cluster name, if configured.
    pub cluster: Option<String>,
    /// Mesos version string.
    pub version: String,
    /// Registered agents.
    pub slaves: Vec<StateAgent>,
    /// Registered frameworks.
    pub frameworks: Vec<StateFramework>,
}

/// One agent in `/master/state`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StateAgent {
    /// Agent ID.
    pub id: String,
    /// `slave(1)@ip:port`.
    pub pid: String,
    /// Hostname.
    pub hostname: String,
    /// Agent port.
    pub port: u16,
    /// Whether the agent is connected.
    pub active: bool,
    /// Resources as a flat object: numbers for scalars, strings for ranges/sets.
    pub resources: BTreeMap<String, serde_json::Value>,
    /// Attributes as a flat object.
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// One framework in `/master/state`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StateFramework {
    /// Framework ID.
    pub id: String,
    /// Framework name.
    pub name: String,
    /// Whether it is active.
    pub active: bool,
    /// Its executors.
    pub executors: Vec<StateExecutor>,
}

/// One executor in `/master/state`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StateExecutor {
    /// Executor ID.
    pub executor_id: String,
    /// Executor name.
    pub name: String,
    /// Agent it runs on.
    pub slave_id: String,
}
