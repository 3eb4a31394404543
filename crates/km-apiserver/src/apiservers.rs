//! The `kubernetes` Service in `default` and its Endpoints: the API servers that are alive.
//!
//! Each API server holds a Lease in `kube-system` (`km-apiserver-<address>-<port>`, labelled
//! `apiserver.kubernetes.io/identity=kube-apiserver` as kube-apiserver's identity leases are)
//! and renews it every `--identity-lease-renew-interval-seconds`; every server then writes the
//! Endpoints from the leases not older than `--identity-lease-duration-seconds`, so a server
//! that dies drops out of them once its lease runs out, and one that stops leaves at once.
//! Pods reach the API through the Service's ClusterIP, the first address of
//! `--service-cluster-ip-range`, as in Kubernetes.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{Api, DeleteOptions, Mutation};
use crate::error::{ApiError, ApiResult};
use crate::registry::{Kind, lookup};
use crate::storage::Storage;

/// The label of API server leases.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
const ENDPOINT_ANNOTATION: &str = "km.io/apiserver-endpoint";

/// Where this API server is reached, and how long its lease lasts.
#[derive(Debug, Clone)]
pub struct Identity {
    pub address: IpAddr,
    pub port: u16,
    /// `https` (the secure port) or `http`.
    pub scheme: &'static str,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

impl Identity {
    fn lease_name(&self) -> String {
        let address = self.address.to_string().replace(['.', ':'], "-");
        format!("km-apiserver-{address}-{}", self.port)
    }
}

fn kind(group: &str, plural: &str) -> &'static Kind {
    match lookup(group, "v1", plural) {
        Some(kind) => kind,
        None => unreachable!("{plural} is a served kind"),
    }
}

/// `2006-01-02T15:04:05.000000Z` for a unix time in microseconds.
fn micro_time(unix_micros: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_microsecond(unix_micros)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

fn parse_micro_time(text: &str) -> Option<i64> {
    text.parse::<k8s_openapi::jiff::Timestamp>().ok().map(|t| t.as_microsecond())
}

/// Creates or replaces `name` in `namespace` with `desired` (its spec-like fields), leaving it
/// alone when it already says the same.
async fn upsert<S: Storage>(
    api: &Api<S>,
    kind: &'static Kind,
    namespace: &str,
    name: &str,
    desired: Value,
    same: impl Fn(&Value) -> bool,
) -> ApiResult<()> {
    match api.get(kind, Some(namespace), name).await {
        Ok(current) if same(&current) => Ok(()),
        Ok(current) => {
            let mut next = desired;
            next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            api.update(kind, Some(namespace), name, None, Mutation::Replace(next)).await.map(drop)
        }
        Err(ApiError::NotFound { .. }) => match api.create(kind, Some(namespace), desired).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Renews this server's lease (now, in unix microseconds), then writes the `kubernetes`
/// Service and its Endpoints from the live leases.
pub async fn reconcile<S: Storage>(api: &Api<S>, me: &Identity, now_micros: i64) -> ApiResult<()> {
    let leases = kind("coordination.k8s.io", "leases");
    let name = me.lease_name();
    let endpoint = format!("{}://{}", me.scheme, std::net::SocketAddr::new(me.address, me.port));
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-system",
                     "labels": {IDENTITY_LABEL: "kube-apiserver"},
                     "annotations": {ENDPOINT_ANNOTATION: endpoint}},
        "spec": {"holderIdentity": name,
                 "leaseDurationSeconds": me.lease_duration.as_secs(),
                 "renewTime": micro_time(now_micros)},
    });
    upsert(api, leases, "kube-system", &name, lease, |_| false).await?;
    write_service(api, me).await?;
    write_endpoints(api, now_micros).await
}

/// Takes this server out of the Endpoints at once (a graceful stop).
pub async fn leave<S: Storage>(api: &Api<S>, me: &Identity, now_micros: i64) -> ApiResult<()> {
    let leases = kind("coordination.k8s.io", "leases");
    match api.delete(leases, Some("kube-system"), &me.lease_name(), &DeleteOptions::default()).await
    {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    write_endpoints(api, now_micros).await
}

async fn write_service<S: Storage>(api: &Api<S>, me: &Identity) -> ApiResult<()> {
    let services = kind("", "services");
    let (port_name, port) = if me.scheme == "https" { ("https", 443) } else { ("http", 80) };
    let ports =
        json!([{"name": port_name, "port": port, "protocol": "TCP", "targetPort": me.port}]);
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "sessionAffinity": "None", "ports": ports},
    });
    service["spec"]["clusterIP"] = json!(api.config.ranges.cluster_ips.first().to_string());
    match api.get(services, Some("default"), "kubernetes").await {
        Ok(_) => Ok(()),
        Err(ApiError::NotFound { .. }) => {
            match api.create(services, Some("default"), service.clone()).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
                // The first address is taken: any other will do.
                Err(ApiError::Invalid { .. }) => {
                    if let Some(spec) = service["spec"].as_object_mut() {
                        spec.remove("clusterIP");
                    }
                    match api.create(services, Some("default"), service).await {
                        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The Endpoints of the live leases: one subset per port.
async fn write_endpoints<S: Storage>(api: &Api<S>, now_micros: i64) -> ApiResult<()> {
    let leases = kind("coordination.k8s.io", "leases");
    let query = [("labelSelector".to_owned(), format!("{IDENTITY_LABEL}=kube-apiserver"))]
        .into_iter()
        .collect();
    let list = api.list(leases, Some("kube-system"), &query).await?;
    let mut live: Vec<(String, String, u16)> = Vec::new();
    for lease in list["items"].as_array().into_iter().flatten() {
        let renewed = lease["spec"]["renewTime"].as_str().and_then(parse_micro_time);
        let duration = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(0);
        let alive = renewed
            .is_some_and(|r| r.saturating_add(duration.saturating_mul(1_000_000)) > now_micros);
        let endpoint = lease["metadata"]["annotations"][ENDPOINT_ANNOTATION].as_str();
        if let (true, Some(url)) = (alive, endpoint.and_then(|e| e.parse::<http::Uri>().ok())) {
            let scheme = url.scheme_str().unwrap_or("http").to_owned();
            let (Some(host), Some(port)) = (url.host(), url.port_u16()) else { continue };
            live.push((scheme, host.trim_matches(['[', ']']).to_owned(), port));
        }
    }
    live.sort();
    live.dedup();
    let mut subsets: Vec<Value> = Vec::new();
    let mut ports: Vec<(String, u16)> = live.iter().map(|(s, _, p)| (s.clone(), *p)).collect();
    ports.dedup();
    for (scheme, port) in ports {
        let addresses: Vec<Value> = live
            .iter()
            .filter(|(s, _, p)| *s == scheme && *p == port)
            .map(|(_, ip, _)| json!({"ip": ip}))
            .collect();
        subsets.push(json!({"addresses": addresses,
                            "ports": [{"name": scheme, "port": port, "protocol": "TCP"}]}));
    }
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "subsets": subsets,
    });
    let want = endpoints["subsets"].clone();
    let same = move |current: &Value| {
        current["subsets"] == want || (current["subsets"].is_null() && want == json!([]))
    };
    upsert(api, kind("", "endpoints"), "default", "kubernetes", endpoints, same).await
}

/// Now, in unix microseconds.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Reconciles every renew interval until `stopped`, then leaves.
pub async fn run<S: Storage>(
    api: std::sync::Arc<Api<S>>,
    me: Identity,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut failing = false;
    loop {
        match reconcile(&api, &me, now_micros()).await {
            Ok(()) if failing => {
                tracing::info!("the kubernetes Service and its Endpoints are written again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!("cannot write the kubernetes Service or its Endpoints: {e}");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(me.renew_interval) => {}
            () = &mut stopped => break,
        }
    }
    if let Err(e) = leave(&api, &me, now_micros()).await {
        tracing::warn!("cannot take this server out of the kubernetes Endpoints: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::ApiConfig;
    use crate::storage::MemoryStorage;

    fn me(port: u16) -> Identity {
        Identity {
            address: "10.1.0.5".parse().unwrap(),
            port,
            scheme: "https",
            lease_duration: Duration::from_secs(30),
            renew_interval: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn live_servers_are_the_endpoints_of_the_kubernetes_service() {
        let api = Api::new(Arc::new(MemoryStorage::default()), ApiConfig::default());
        api.bootstrap().await.unwrap();
        let t0 = 1_800_000_000_000_000;
        reconcile(&api, &me(6443), t0).await.unwrap();
        reconcile(&api, &me(6444), t0 + 1_000_000).await.unwrap();
        let services = kind("", "services");
        let svc = api.get(services, Some("default"), "kubernetes").await.unwrap();
        assert_eq!(svc["spec"]["clusterIP"], api.config.ranges.cluster_ips.first().to_string());
        assert_eq!(svc["spec"]["ports"][0]["port"], 443);
        let endpoints = kind("", "endpoints");
        let eps = api.get(endpoints, Some("default"), "kubernetes").await.unwrap();
        let ports: Vec<i64> = eps["subsets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["ports"][0]["port"].as_i64())
            .collect();
        assert_eq!(ports, [6443, 6444]);
        assert_eq!(eps["subsets"][0]["addresses"][0]["ip"], "10.1.0.5");

        // 6443 stops renewing; past its lease only 6444 is left.
        reconcile(&api, &me(6444), t0 + 31_000_000).await.unwrap();
        let eps = api.get(endpoints, Some("default"), "kubernetes").await.unwrap();
        assert_eq!(eps["subsets"].as_array().unwrap().len(), 1, "{eps}");
        assert_eq!(eps["subsets"][0]["ports"][0]["port"], 6444);

        // 6444 leaves: nobody is left.
        leave(&api, &me(6444), t0 + 32_000_000).await.unwrap();
        let eps = api.get(endpoints, Some("default"), "kubernetes").await.unwrap();
        assert!(eps["subsets"].as_array().is_none_or(Vec::is_empty), "{eps}");
    }
}
