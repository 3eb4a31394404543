//! `pods/log`: the API server finds the node a pod runs on, and streams the container's log
//! from the endpoint that node publishes (`status.daemonEndpoints.kubeletEndpoint.port` at its
//! InternalIP, else its Hostname) — km executor's, or any kubelet's. The request carries the
//! bearer token of `--kubelet-token-file`, which is how the node tells the API server from
//! anybody else.

use std::time::Duration;

use serde_json::Value;

use crate::api::Query;
use crate::error::{ApiError, ApiResult};

/// How the API server reaches nodes.
#[derive(Debug, Clone)]
pub struct NodeProxy {
    client: reqwest::Client,
    token: Option<String>,
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
        NodeProxy { client, token }
    }

    /// The log of `container` of `pod` (already read from the store) from the pod's node.
    pub async fn pod_log(
        &self,
        pod: &Value,
        node: Option<&Value>,
        query: &Query,
    ) -> ApiResult<reqwest::Response> {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let container = log_container(pod, query.get("container").map(String::as_str))?;
        let node_name =
            pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| {
                ApiError::BadRequest(format!("pod {name} does not have a host assigned"))
            })?;
        let node = node.ok_or_else(|| {
            ApiError::Internal(format!("node {node_name:?} of pod {name} does not exist"))
        })?;
        let base = node_endpoint(node).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "node {node_name:?} publishes no endpoint for logs (status.daemonEndpoints.kubeletEndpoint and an address)"
            ))
        })?;
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
        let message = format!("node {node_name:?}: {}", body.trim());
        Err(match status.as_u16() {
            400 | 404 => ApiError::BadRequest(message),
            401 | 403 => ApiError::Forbidden(format!(
                "{message} (does the node's token file match the API server's --kubelet-token-file?)"
            )),
            _ => ApiError::Internal(message),
        })
    }
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

/// `host:port` of a node's published endpoint.
fn node_endpoint(node: &Value) -> Option<String> {
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
    if port == 0 || port > u64::from(u16::MAX) {
        return None;
    }
    let addresses = node["status"]["addresses"].as_array()?;
    let address = ["InternalIP", "Hostname", "ExternalIP"].iter().find_map(|t| {
        addresses.iter().find(|a| a["type"] == *t).and_then(|a| a["address"].as_str())
    })?;
    Some(if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    })
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
