//! [`MesosCloud`]: the cloud provider over HTTP to a Mesos master.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use km_mesos::ContentType;
use km_mesos::v1::master::{Call, Response, call};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use tokio::time::Instant;

use crate::config::CloudConfig;
use crate::error::CloudError;
use crate::state::{self, ClusterView, LegacyState};
use crate::watch::AgentWatch;
use crate::{
    CloudProvider, DEFAULT_CLUSTER_NAME, Instance, NodeAddress, NodeAddressType, PROVIDER_NAME,
};

/// The operator API endpoint.
pub(crate) const OPERATOR_PATH: &str = "/api/v1";
/// The legacy state endpoint of masters since 0.25.
const LEGACY_STATE_PATH: &str = "/master/state";
/// The legacy state endpoint every older master answers.
const OLDEST_STATE_PATH: &str = "/state.json";
/// Redirects followed per request before giving up (a redirect to the
/// leader takes one; more means masters disagree about who leads).
const MAX_REDIRECTS: usize = 4;
/// How much of an error body is kept in [`CloudError::Status`].
const MAX_ERROR_BODY: usize = 512;

/// The Mesos cloud provider: agents of a Mesos cluster are the instances.
///
/// Cheap to clone; clones share the HTTP clients and the caches.
#[derive(Debug, Clone)]
pub struct MesosCloud {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: CloudConfig,
    /// Every request through it ends within `http-client-timeout`.
    http: reqwest::Client,
    /// For the SUBSCRIBE stream, which stays open: only connecting is bounded.
    stream_http: reqwest::Client,
    instances: Cache<Arc<Vec<Instance>>>,
    cluster: Cache<String>,
    /// Bumped by [`MesosCloud::invalidate`]; cached values of an older
    /// generation are not used.
    generation: AtomicU64,
}

impl MesosCloud {
    /// A provider for the master in `config`. No request is made yet.
    pub fn new(config: CloudConfig) -> Result<Self, CloudError> {
        let client = |total: Option<Duration>| {
            let mut b = reqwest::Client::builder()
                // Redirects to the leader are followed here, re-posting the
                // call, which reqwest's policy does not do for 302/303.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(config.http_client_timeout);
            if let Some(total) = total {
                b = b.timeout(total);
            }
            b.build().map_err(CloudError::Client)
        };
        let inner = Inner {
            http: client(Some(config.http_client_timeout))?,
            stream_http: client(None)?,
            instances: Cache::new(config.state_cache_ttl),
            cluster: Cache::new(config.state_cache_ttl),
            generation: AtomicU64::new(0),
            config,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The configuration in use.
    pub fn config(&self) -> &CloudConfig {
        &self.inner.config
    }

    /// Forgets cached answers: the next call asks the master again.
    pub fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The cluster name: the master's `--cluster`, or `mesos` when unset.
    pub async fn cluster_name(&self) -> Result<String, CloudError> {
        let generation = self.generation();
        self.inner.cluster.get_or_fetch(generation, || self.fetch_cluster_name()).await
    }

    /// Every agent the master knows, connected or not.
    pub async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(self.snapshot().await?.as_ref().clone())
    }

    /// The agent with this hostname (compared without regard to case, as
    /// DNS names are); `None` when the master does not know it. When the
    /// master lists several (an agent that came back with a new ID), an
    /// active one is preferred.
    pub async fn instance(&self, hostname: &str) -> Result<Option<Instance>, CloudError> {
        let all = self.snapshot().await?;
        let mut matching = all.iter().filter(|i| i.hostname.eq_ignore_ascii_case(hostname));
        let first = matching.next();
        let active = first.filter(|i| i.active).or_else(|| matching.find(|i| i.active));
        Ok(active.or(first).cloned())
    }

    /// The addresses of the agent with this hostname: its IP (from the
    /// master's record of it, else from DNS) and its hostname.
    pub async fn node_addresses(&self, hostname: &str) -> Result<Vec<NodeAddress>, CloudError> {
        match self.instance(hostname).await? {
            Some(i) => Ok(i.addresses),
            None => Err(CloudError::InstanceNotFound(hostname.to_owned())),
        }
    }

    /// Agents on which no framework runs km's executor (`Kubelet-Executor`).
    pub async fn instances_without_executor(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(self.snapshot().await?.iter().filter(|i| !i.has_km_executor).cloned().collect())
    }

    /// Follows agent changes on the operator API's event stream. Must be
    /// called inside a Tokio runtime; the watch stops when dropped.
    pub fn watch(&self) -> AgentWatch {
        AgentWatch::start(self.clone())
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    async fn snapshot(&self) -> Result<Arc<Vec<Instance>>, CloudError> {
        let generation = self.generation();
        self.inner.instances.get_or_fetch(generation, || self.fetch_instances()).await
    }

    async fn fetch_instances(&self) -> Result<Arc<Vec<Instance>>, CloudError> {
        let view = self.fetch_view().await?;
        let timeout = self.inner.config.http_client_timeout;
        let instances = futures::future::join_all(view.agents.into_iter().map(|agent| {
            let has_km_executor = view.km_executor_agents.contains(&agent.id);
            async move {
                let ip = match agent.pid.as_deref().and_then(state::pid_ip) {
                    Some(ip) => Some(ip),
                    None => resolve(&agent.hostname, timeout).await,
                };
                let mut addresses = Vec::with_capacity(2);
                if let Some(ip) = ip {
                    addresses.push(NodeAddress {
                        type_: NodeAddressType::InternalIp,
                        address: ip.to_string(),
                    });
                }
                if !agent.hostname.is_empty() {
                    addresses.push(NodeAddress {
                        type_: NodeAddressType::Hostname,
                        address: agent.hostname.clone(),
                    });
                }
                Instance {
                    agent_id: agent.id,
                    hostname: agent.hostname,
                    addresses,
                    cpus: agent.cpus,
                    mem_mb: agent.mem_mb,
                    active: agent.active,
                    has_km_executor,
                }
            }
        }))
        .await;
        tracing::debug!(agents = instances.len(), "read the agents of the Mesos cluster");
        Ok(Arc::new(instances))
    }

    /// Agents and executors, from the operator API or, on a master that
    /// does not have it, from the legacy state document.
    async fn fetch_view(&self) -> Result<ClusterView, CloudError> {
        let operator = async {
            let (agents, executors) = futures::future::try_join(
                self.operator_call(call::Type::GetAgents),
                self.operator_call(call::Type::GetExecutors),
            )
            .await?;
            let agents = agents.get_agents.ok_or_else(|| self.missing("get_agents"))?;
            let executors = executors.get_executors.ok_or_else(|| self.missing("get_executors"))?;
            Ok(state::from_operator(agents, executors))
        };
        match operator.await {
            Ok(view) => Ok(view),
            Err(e) if operator_api_missing(&e) => {
                tracing::debug!(error = %e, "no operator API; reading the legacy state instead");
                Ok(self.legacy_state_after(e).await?.view())
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch_cluster_name(&self) -> Result<String, CloudError> {
        let operator = async {
            let flags = self.operator_call(call::Type::GetFlags).await?;
            let flags = flags.get_flags.ok_or_else(|| self.missing("get_flags"))?;
            Ok(flags.flags.into_iter().find(|f| f.name == "cluster").and_then(|f| f.value))
        };
        let name = match operator.await {
            Ok(name) => name,
            // km's master does not answer GET_FLAGS (501): same fallback.
            Err(e) if operator_api_missing(&e) => self.legacy_state_after(e).await?.cluster(),
            Err(e) => return Err(e),
        };
        Ok(name.filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_owned()))
    }

    /// The legacy state, read because the operator API failed with `operator`.
    async fn legacy_state_after(&self, operator: CloudError) -> Result<LegacyState, CloudError> {
        self.legacy_state().await.map_err(|legacy| CloudError::NoUsableApi {
            operator: Box::new(operator),
            legacy: Box::new(legacy),
        })
    }

    async fn legacy_state(&self) -> Result<LegacyState, CloudError> {
        match self.get_legacy(LEGACY_STATE_PATH).await {
            Err(e) if e.status() == Some(404) => {
                tracing::debug!(error = %e, "trying the oldest state endpoint");
                self.get_legacy(OLDEST_STATE_PATH).await
            }
            other => other,
        }
    }

    async fn get_legacy(&self, path: &str) -> Result<LegacyState, CloudError> {
        let (url, resp) = self.send(&self.inner.http, Method::GET, path, None).await?;
        let resp = self.expect_ok(&url, resp).await?;
        let body = resp.bytes().await.map_err(|e| self.transport(&url, e))?;
        LegacyState::from_json(&body).map_err(|e| CloudError::Decode {
            url: url.to_string(),
            problem: format!("not a Mesos state document: {e}"),
        })
    }

    /// Sends an operator call without arguments and decodes the answer.
    async fn operator_call(&self, ty: call::Type) -> Result<Response, CloudError> {
        let mut c = Call::default();
        c.set_type(ty);
        let body = Bytes::from(ContentType::Json.encode(&c));
        let (url, resp) =
            self.send(&self.inner.http, Method::POST, OPERATOR_PATH, Some(body)).await?;
        let resp = self.expect_ok(&url, resp).await?;
        let content_type = response_content_type(&resp);
        let body = resp.bytes().await.map_err(|e| self.transport(&url, e))?;
        let Some(content_type) = content_type else {
            return Err(CloudError::Decode {
                url: url.to_string(),
                problem: "the answer is neither JSON nor protobuf".into(),
            });
        };
        content_type.decode::<Response>(&body).map_err(|e| CloudError::Decode {
            url: url.to_string(),
            problem: format!("not a {ty:?} answer: {e}"),
        })
    }

    /// Sends a request to `path` on the configured master, following
    /// redirects to the leader (`Location` absolute, relative or
    /// scheme-relative, as Mesos writes it) with the same method and body.
    /// Returns the URL that answered and its response.
    pub(crate) async fn send(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(Url, reqwest::Response), CloudError> {
        let mut url = endpoint(&self.inner.config.mesos_master, path);
        for _ in 0..=MAX_REDIRECTS {
            let mut request = client
                .request(method.clone(), url.clone())
                .header(ACCEPT, ContentType::Json.as_str());
            if let Some(body) = &body {
                request =
                    request.header(CONTENT_TYPE, ContentType::Json.as_str()).body(body.clone());
            }
            let resp = request.send().await.map_err(|e| self.transport(&url, e))?;
            if !is_redirect(resp.status()) {
                return Ok((url, resp));
            }
            let next = redirect_target(&url, &resp)?;
            tracing::debug!(from = %url, to = %next, status = %resp.status(), "following a redirect");
            url = next;
        }
        Err(CloudError::Redirect {
            url: url.to_string(),
            problem: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    pub(crate) async fn expect_ok(
        &self,
        url: &Url,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, CloudError> {
        if resp.status() == StatusCode::OK {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        // The body only explains the failure; one that cannot be read
        // leaves the explanation empty rather than hiding the status.
        let mut body = resp.text().await.unwrap_or_default().trim().to_owned();
        if body.len() > MAX_ERROR_BODY {
            let mut cut = MAX_ERROR_BODY;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        Err(CloudError::Status { url: url.to_string(), status, body })
    }

    pub(crate) fn transport(&self, url: &Url, e: reqwest::Error) -> CloudError {
        if e.is_timeout() {
            CloudError::Timeout {
                url: url.to_string(),
                after: self.inner.config.http_client_timeout,
            }
        } else {
            CloudError::Http { url: url.to_string(), source: e }
        }
    }

    pub(crate) fn stream_client(&self) -> &reqwest::Client {
        &self.inner.stream_http
    }

    fn missing(&self, field: &str) -> CloudError {
        CloudError::Decode {
            url: endpoint(&self.inner.config.mesos_master, OPERATOR_PATH).to_string(),
            problem: format!("the answer lacks '{field}'"),
        }
    }
}

impl CloudProvider for MesosCloud {
    fn provider_name(&self) -> &'static str {
        PROVIDER_NAME
    }

    fn cluster_name(&self) -> BoxFuture<'_, Result<String, CloudError>> {
        Box::pin(MesosCloud::cluster_name(self))
    }

    fn instances(&self) -> BoxFuture<'_, Result<Vec<Instance>, CloudError>> {
        Box::pin(MesosCloud::instances(self))
    }

    fn instance<'a>(
        &'a self,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<Option<Instance>, CloudError>> {
        Box::pin(MesosCloud::instance(self, hostname))
    }

    fn node_addresses<'a>(
        &'a self,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<Vec<NodeAddress>, CloudError>> {
        Box::pin(MesosCloud::node_addresses(self, hostname))
    }

    fn instances_without_executor(&self) -> BoxFuture<'_, Result<Vec<Instance>, CloudError>> {
        Box::pin(MesosCloud::instances_without_executor(self))
    }

    fn watch(&self) -> Option<AgentWatch> {
        Some(MesosCloud::watch(self))
    }
}

/// Failures that mean "this master has no (usable) operator API", after
/// which the legacy state document is read: not found or not allowed as a
/// method (before Mesos 1.0), not implemented (km's master for calls it
/// lacks), or an answer that is not the API's.
fn operator_api_missing(e: &CloudError) -> bool {
    match e {
        CloudError::Status { status, .. } => matches!(status, 404 | 405 | 501),
        CloudError::Decode { .. } => true,
        _ => false,
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn redirect_target(from: &Url, resp: &reqwest::Response) -> Result<Url, CloudError> {
    let bad = |problem: String| CloudError::Redirect { url: from.to_string(), problem };
    let location = resp
        .headers()
        .get(LOCATION)
        .ok_or_else(|| bad(format!("{} without a Location header", resp.status())))?;
    let location = location.to_str().map_err(|_| bad("the Location header is not text".into()))?;
    let target =
        from.join(location).map_err(|e| bad(format!("unusable Location {location:?}: {e}")))?;
    if target.scheme() != "http" {
        return Err(bad(format!("Location {location:?} is not plain http")));
    }
    Ok(target)
}

/// The encoding an answer declares, leniently (a proxy may add a charset).
pub(crate) fn response_content_type(resp: &reqwest::Response) -> Option<ContentType> {
    let value = resp.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    ContentType::from_content_type(media.as_bytes())
}

/// `path` below the configured master's URL (and below its path prefix, if any).
pub(crate) fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url
}

/// The agent's IP from DNS: the first IPv4 address, else the first of any
/// kind (the original took the first address the resolver gave). Failure
/// is not an error: the agent is then listed by hostname only.
async fn resolve(hostname: &str, limit: Duration) -> Option<IpAddr> {
    if hostname.is_empty() {
        return None;
    }
    if let Ok(ip) = hostname.parse::<IpAddr>() {
        return Some(ip);
    }
    match tokio::time::timeout(limit, tokio::net::lookup_host((hostname, 0))).await {
        Ok(Ok(addrs)) => {
            let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()).copied()
        }
        Ok(Err(e)) => {
            tracing::debug!(hostname, error = %e, "cannot resolve an agent's hostname");
            None
        }
        Err(_) => {
            tracing::debug!(hostname, "resolving an agent's hostname timed out");
            None
        }
    }
}

/// One cached answer, reused while younger than the TTL and of the current
/// generation. The lock is held while fetching, so callers arriving
/// meanwhile wait for that fetch instead of starting their own.
#[derive(Debug)]
struct Cache<T> {
    ttl: Duration,
    slot: tokio::sync::Mutex<Option<Cached<T>>>,
}

#[derive(Debug)]
struct Cached<T> {
    at: Instant,
    generation: u64,
    value: T,
}

impl<T: Clone> Cache<T> {
    fn new(ttl: Duration) -> Self {
        Self { ttl, slot: tokio::sync::Mutex::new(None) }
    }

    async fn get_or_fetch<F, Fut>(&self, generation: u64, fetch: F) -> Result<T, CloudError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref()
            && c.generation == generation
            && c.at.elapsed() < self.ttl
        {
            return Ok(c.value.clone());
        }
        let value = fetch().await?;
        *slot = Some(Cached { at: Instant::now(), generation, value: value.clone() });
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let base = Url::parse("http://m1:5050/").unwrap();
        assert_eq!(endpoint(&base, "/api/v1").as_str(), "http://m1:5050/api/v1");
        let proxied = Url::parse("http://proxy:80/mesos/").unwrap();
        assert_eq!(endpoint(&proxied, "/master/state").as_str(), "http://proxy/mesos/master/state");
    }

    #[test]
    fn only_missing_apis_lead_to_the_legacy_endpoint() {
        let status = |status| CloudError::Status { url: "u".into(), status, body: String::new() };
        assert!(operator_api_missing(&status(404)));
        assert!(operator_api_missing(&status(501)));
        assert!(operator_api_missing(&CloudError::Decode { url: "u".into(), problem: "x".into() }));
        assert!(!operator_api_missing(&status(503)));
        assert!(!operator_api_missing(&status(401)));
        let timeout = CloudError::Timeout { url: "u".into(), after: Duration::from_secs(1) };
        assert!(!operator_api_missing(&timeout));
    }

    #[tokio::test]
    async fn dns_prefers_ipv4_and_tolerates_failure() {
        let limit = Duration::from_secs(5);
        assert_eq!(resolve("10.1.1.1", limit).await, Some("10.1.1.1".parse().unwrap()));
        let local = resolve("localhost", limit).await.expect("localhost resolves");
        assert!(local.is_loopback(), "{local}");
        assert_eq!(resolve("", limit).await, None);
        assert_eq!(resolve("no-such-host.invalid", limit).await, None);
    }
}
