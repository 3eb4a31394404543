//! `pods/log` and `pods/exec`: the API server finds the node a pod runs on, and reaches the
//! endpoint that node publishes (`status.daemonEndpoints.kubeletEndpoint.port` at its
//! InternalIP, else its Hostname) — km executor's, or any kubelet's. A log is streamed back; an
//! exec is an upgraded connection (WebSocket or SPDY) that the API server hands through in both
//! directions once the node has accepted it, without reading what flows. Every request to a node
//! carries the bearer token of `--kubelet-token-file`, which is how the node tells the API server
//! from anybody else.

use std::time::Duration;

use serde_json::Value;

use crate::api::Query;
use crate::error::{ApiError, ApiResult};

/// How the API server reaches nodes.
#[derive(Debug, Clone)]
pub struct NodeProxy {
    client: reqwest::Client,
    token: Option<String>,
    connect_timeout: Duration,
    /// Where a node that publishes no address is looked up (`--cloud-provider`).
    cloud: Option<std::sync::Arc<dyn km_cloud_provider::CloudProvider>>,
}

impl Default for NodeProxy {
    fn default() -> Self {
        NodeProxy::new(None, Duration::from_secs(5))
    }
}

/// Query parameters of `pods/log` passed on to the node, as the kubelet names them.
const LOG_PARAMS: [&str; 7] =
    ["follow", "tailLines", "limitBytes", "previous", "timestamps", "sinceSeconds", "sinceTime"];

impl NodeProxy {
    /// A proxy presenting `token`; `connect_timeout` bounds reaching a node.
    pub fn new(token: Option<String>, connect_timeout: Duration) -> NodeProxy {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        NodeProxy { client, token, connect_timeout, cloud: None }
    }

    /// Nodes whose objects carry no address are looked up with `cloud` (the Mesos agents'
    /// addresses, from the master).
    pub fn with_cloud(
        mut self,
        cloud: Option<std::sync::Arc<dyn km_cloud_provider::CloudProvider>>,
    ) -> NodeProxy {
        self.cloud = cloud;
        self
    }

    /// `host:port` of the node's endpoint: its published port at its published address, else at
    /// the address the cloud provider knows for it.
    async fn endpoint(&self, node: &Value, node_name: &str) -> Option<String> {
        if let Some(e) = node_endpoint(node) {
            return Some(e);
        }
        let port = endpoint_port(node)?;
        let addresses = self.cloud.as_ref()?.node_addresses(node_name).await.ok()?;
        let address = ["InternalIP", "Hostname"].iter().find_map(|t| {
            addresses.iter().find(|a| a.type_.as_str() == *t).map(|a| a.address.clone())
        })?;
        Some(host_port(&address, port))
    }

    /// The log of `container` of `pod` (already read from the store) from the pod's node.
    pub async fn pod_log(
        &self,
        pod: &Value,
        node: Option<&Value>,
        query: &Query,
    ) -> ApiResult<reqwest::Response> {
        let Target { namespace, name, container, node_name, base } =
            self.target(pod, node, query.get("container").map(String::as_str)).await?;
        let mut url = format!("http://{base}/containerLogs/{namespace}/{name}/{container}");
        let params = {
            let mut params = form_urlencoded::Serializer::new(String::new());
            for k in LOG_PARAMS {
                if let Some(v) = query.get(k) {
                    params.append_pair(k, v);
                }
            }
            params.finish()
        };
        if !params.is_empty() {
            url = format!("{url}?{params}");
        }
        let mut request = self.client.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            ApiError::Internal(format!("cannot reach node {node_name:?} at {base}: {e}"))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(node_refused(&node_name, status.as_u16(), &body))
    }

    /// Where a request for a pod's container goes.
    async fn target(
        &self,
        pod: &Value,
        node: Option<&Value>,
        container: Option<&str>,
    ) -> ApiResult<Target> {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let container = log_container(pod, container)?;
        let node_name = pod["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("pod {name} does not have a host assigned"))
            })?
            .to_owned();
        let node = node.ok_or_else(|| {
            ApiError::Internal(format!("node {node_name:?} of pod {name} does not exist"))
        })?;
        let base = self.endpoint(node, &node_name).await.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "node {node_name:?} publishes no endpoint for logs and exec (status.daemonEndpoints.kubeletEndpoint and an address)"
        ))
    })?;
        Ok(Target { namespace, name, container, node_name, base })
    }

    /// `pods/exec`: sends the client's upgrade request on to the pod's node and, once the node
    /// switches protocols, joins the two connections.
    pub async fn pod_exec(
        &self,
        pod: &Value,
        node: Option<&Value>,
        query: &Query,
        mut request: axum::extract::Request,
    ) -> ApiResult<axum::response::Response> {
        let Target { namespace, name, container, node_name, base } =
            self.target(pod, node, query.get("container").map(String::as_str)).await?;
        if pod["status"]["phase"].as_str().is_some_and(|p| p == "Succeeded" || p == "Failed") {
            return Err(ApiError::BadRequest(format!(
                "cannot exec into a container in a completed pod; current phase is {}",
                pod["status"]["phase"].as_str().unwrap_or_default()
            )));
        }
        let path = match request.uri().query() {
            Some(q) => format!("/exec/{namespace}/{name}/{container}?{q}"),
            None => format!("/exec/{namespace}/{name}/{container}"),
        };
        let unreachable = |e: &dyn std::fmt::Display| {
            ApiError::Internal(format!("cannot reach node {node_name:?} at {base}: {e}"))
        };
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&base))
                .await
                .map_err(|_| unreachable(&"timed out"))?
                .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("exec proxy: node connection: {e}");
            }
        });
        let mut upstream = http::Request::builder()
            .method(request.method().clone())
            .uri(path)
            .header(http::header::HOST, &base);
        for (k, v) in request.headers() {
            if UPGRADE_HEADERS.contains(&k.as_str()) {
                upstream = upstream.header(k, v);
            }
        }
        if let Some(token) = &self.token {
            upstream = upstream.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let upstream = upstream
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| ApiError::Internal(format!("exec request to the node: {e}")))?;
        let mut response = sender.send_request(upstream).await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        if status != http::StatusCode::SWITCHING_PROTOCOLS {
            let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
                response.into_body(),
                64 << 10,
            ))
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
            if status.is_success() {
                return Err(ApiError::BadRequest(format!(
                    "node {node_name:?} did not upgrade the connection (exec needs a WebSocket or SPDY/3.1 upgrade)"
                )));
            }
            return Err(node_refused(&node_name, status.as_u16(), &body));
        }
        let node_side = hyper::upgrade::on(&mut response);
        let client_side = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            match tokio::try_join!(node_side, client_side) {
                Ok((node_io, client_io)) => {
                    let mut node_io = hyper_util::rt::TokioIo::new(node_io);
                    let mut client_io = hyper_util::rt::TokioIo::new(client_io);
                    let _ = tokio::io::copy_bidirectional(&mut client_io, &mut node_io).await;
                }
                Err(e) => tracing::debug!("exec proxy: upgrade: {e}"),
            }
        });
        let mut answer = axum::response::Response::new(axum::body::Body::empty());
        *answer.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        for (k, v) in response.headers() {
            if UPGRADE_HEADERS.contains(&k.as_str()) || k.as_str() == "sec-websocket-accept" {
                answer.headers_mut().append(k, v.clone());
            }
        }
        Ok(answer)
    }
}

/// Headers of an upgrade that travel between the client and the node.
const UPGRADE_HEADERS: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// A node's refusal, as the API server's answer.
fn node_refused(node_name: &str, status: u16, body: &str) -> ApiError {
    let message = format!("node {node_name:?}: {}", body.trim());
    match status {
        400 | 404 => ApiError::BadRequest(message),
        401 | 403 => ApiError::Forbidden(format!(
            "{message} (does the node's token file match the API server's --kubelet-token-file?)"
        )),
        _ => ApiError::Internal(message),
    }
}

/// Where a request for a pod's container goes.
struct Target {
    namespace: String,
    name: String,
    container: String,
    node_name: String,
    /// `host:port` of the node's endpoint.
    base: String,
}

/// The container whose log is asked for: the named one, else the pod's only container or its
/// `kubectl.kubernetes.io/default-container`.
fn log_container(pod: &Value, asked: Option<&str>) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod["spec"][*k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let regular: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match asked.filter(|a| !a.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::BadRequest(format!("container {c} is not valid for pod {name}"))),
        None => {
            let default = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
                .as_str()
                .filter(|d| regular.contains(d));
            match (default, regular.as_slice()) {
                (Some(d), _) => Ok(d.to_owned()),
                (None, [only]) => Ok((*only).to_owned()),
                _ => Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    regular.join(" ")
                ))),
            }
        }
    }
}

/// The port a node publishes for its endpoint.
fn endpoint_port(node: &Value) -> Option<u16> {
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
    u16::try_from(port).ok().filter(|p| *p != 0)
}

fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") }
}

/// `host:port` of a node's published endpoint.
fn node_endpoint(node: &Value) -> Option<String> {
    let port = endpoint_port(node)?;
    let addresses = node["status"]["addresses"].as_array()?;
    let address = ["InternalIP", "Hostname", "ExternalIP"].iter().find_map(|t| {
        addresses.iter().find(|a| a["type"] == *t).and_then(|a| a["address"].as_str())
    })?;
    Some(host_port(address, port))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(containers: &[&str], annotations: Value) -> Value {
        let cs: Vec<Value> = containers.iter().map(|c| json!({ "name": c })).collect();
        json!({
            "metadata": { "name": "p", "namespace": "ns", "annotations": annotations },
            "spec": { "containers": cs, "initContainers": [{ "name": "init" }], "nodeName": "n1" },
        })
    }

    #[test]
    fn the_container_is_named_defaulted_or_asked_for() {
        assert_eq!(log_container(&pod(&["a"], json!({})), None).expect("only"), "a");
        assert_eq!(log_container(&pod(&["a", "b"], json!({})), Some("b")).expect("named"), "b");
        assert_eq!(
            log_container(&pod(&["a", "b"], json!({})), Some("init")).expect("init"),
            "init"
        );
        let annotated = pod(&["a", "b"], json!({ "kubectl.kubernetes.io/default-container": "b" }));
        assert_eq!(log_container(&annotated, None).expect("default"), "b");
        let err = log_container(&pod(&["a", "b"], json!({})), None).expect_err("ambiguous");
        assert!(err.to_string().contains("choose one of: [a b]"), "{err}");
        let err = log_container(&pod(&["a"], json!({})), Some("zz")).expect_err("unknown");
        assert!(err.to_string().contains("container zz is not valid for pod p"), "{err}");
    }

    #[test]
    fn the_endpoint_prefers_the_internal_ip() {
        let node = json!({ "status": {
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
            "addresses": [{ "type": "Hostname", "address": "h1" }, { "type": "InternalIP", "address": "10.1.2.3" }],
        }});
        assert_eq!(node_endpoint(&node).as_deref(), Some("10.1.2.3:10250"));
        let hostname_only = json!({ "status": {
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 7 } },
            "addresses": [{ "type": "Hostname", "address": "h1" }],
        }});
        assert_eq!(node_endpoint(&hostname_only).as_deref(), Some("h1:7"));
        let v6 = json!({ "status": {
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 7 } },
            "addresses": [{ "type": "InternalIP", "address": "::1" }],
        }});
        assert_eq!(node_endpoint(&v6).as_deref(), Some("[::1]:7"));
        assert_eq!(node_endpoint(&json!({ "status": { "addresses": [] } })), None);
    }
}
