//! Where the framework ID is kept between runs, so that a restarted scheduler re-subscribes as
//! the same framework and keeps its tasks.
//!
//! With `--etcd-servers` it is the value of `/k8sm/<framework name>/frameworkid` (the
//! original's key), attached to a lease whose TTL is the failover timeout: the stored ID
//! disappears when Mesos would have removed the framework. Without etcd it is a ConfigMap
//! `km-framework-id-<name>` in `kube-system`, with its expiry written beside it. Either way the
//! expiry is pushed forward every `framework-id-refresh-interval` while the scheduler runs.
//! A failover timeout of zero keeps nothing (and removes what was kept).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

/// etcd's largest lease TTL (seconds).
const ETCD_MAX_TTL: i64 = 9_000_000_000;

/// A framework ID store that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// etcd.
    #[error("etcd ({endpoints}): {source}")]
    Etcd {
        /// Endpoints.
        endpoints: String,
        /// Cause.
        #[source]
        source: etcd_client::Error,
    },
    /// The API.
    #[error("API ConfigMap kube-system/{name}: {source}")]
    Api {
        /// ConfigMap name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// The store.
pub(crate) enum Store {
    /// In etcd.
    Etcd {
        /// Clients, one per member.
        members: crate::etcd::Members,
        /// Endpoints (for messages).
        endpoints: String,
        /// Key.
        key: String,
        /// The lease the key is attached to.
        lease: Option<i64>,
    },
    /// In a ConfigMap.
    Api {
        /// Client.
        client: kube::Client,
        /// ConfigMap name.
        name: String,
    },
}

const NAMESPACE: &str = "kube-system";

fn configmap_name(framework: &str) -> String {
    let mut s: String = framework
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s = s.trim_matches('-').to_owned();
    if s.is_empty() {
        s = "framework".into();
    }
    let mut name = format!("km-framework-id-{s}");
    name.truncate(253);
    name.trim_end_matches('-').to_owned()
}

impl Store {
    /// Connects to etcd (when endpoints are given) or uses the API.
    pub(crate) async fn open(
        etcd: &[String],
        framework: &str,
        api: &kube::Client,
    ) -> Result<Store, StoreError> {
        if etcd.is_empty() {
            return Ok(Store::Api { client: api.clone(), name: configmap_name(framework) });
        }
        let endpoints = etcd.join(",");
        let members = crate::etcd::Members::connect(etcd, Duration::from_secs(10))
            .await
            .map_err(|source| StoreError::Etcd { endpoints: endpoints.clone(), source })?;
        Ok(Store::Etcd {
            members,
            endpoints,
            key: format!("/k8sm/{framework}/frameworkid"),
            lease: None,
        })
    }

    /// The stored framework ID, if any and not expired.
    pub(crate) async fn load(&mut self) -> Result<Option<String>, StoreError> {
        match self {
            Store::Etcd { members, endpoints, key, lease } => {
                let key = key.as_str();
                let resp = members
                    .run(|mut c| async move { c.get(key, None).await })
                    .await
                    .map_err(|source| StoreError::Etcd { endpoints: endpoints.clone(), source })?;
                let Some(kv) = resp.kvs().first() else { return Ok(None) };
                *lease = (kv.lease() != 0).then_some(kv.lease());
                Ok(kv.value_str().ok().map(str::to_owned).filter(|v| !v.is_empty()))
            }
            Store::Api { client, name } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let cm = api
                    .get_opt(name)
                    .await
                    .map_err(|source| StoreError::Api { name: name.clone(), source })?;
                let Some(data) = cm.and_then(|c| c.data) else { return Ok(None) };
                let expired = data
                    .get("expires")
                    .and_then(|e| e.parse::<Timestamp>().ok())
                    .is_some_and(|e| e <= Timestamp::now());
                Ok(data.get("frameworkId").filter(|id| !id.is_empty() && !expired).cloned())
            }
        }
    }

    /// Stores `id`, valid for `ttl` from now.
    pub(crate) async fn save(&mut self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).clamp(1, ETCD_MAX_TTL);
        match self {
            Store::Etcd { members, endpoints, key, lease } => {
                let key = key.as_str();
                let err = |source| StoreError::Etcd { endpoints: endpoints.clone(), source };
                let granted = members
                    .run(|mut c| async move { c.lease_grant(secs, None).await })
                    .await
                    .map_err(err)?;
                let opts = etcd_client::PutOptions::new().with_lease(granted.id());
                members
                    .run(|mut c| {
                        let opts = opts.clone();
                        async move { c.put(key, id, Some(opts)).await }
                    })
                    .await
                    .map_err(err)?;
                if let Some(old) = lease.replace(granted.id())
                    && old != granted.id()
                {
                    // The key has left the old lease; revoking it frees etcd of it.
                    let _ = members.run(|mut c| async move { c.lease_revoke(old).await }).await;
                }
                Ok(())
            }
            Store::Api { client, name } => {
                let expires = Timestamp::now()
                    .checked_add(SignedDuration::from_secs(secs))
                    .unwrap_or(Timestamp::MAX);
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                let err = |source| StoreError::Api { name: name.clone(), source };
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": { "name": name, "namespace": NAMESPACE, "labels": { "app.kubernetes.io/managed-by": "km-scheduler" } },
                    "data": { "frameworkId": id, "expires": expires.to_string() },
                }))
                .map_err(|e| err(kube::Error::SerdeError(e)))?;
                match api.replace(name, &PostParams::default(), &cm).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        ensure_namespace(client).await.map_err(err)?;
                        api.create(&PostParams::default(), &cm).await.map(drop).map_err(err)
                    }
                    Err(e) => Err(err(e)),
                }
            }
        }
    }

    /// Pushes the expiry of the stored `id` forward by `ttl`.
    pub(crate) async fn refresh(&mut self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        if let Store::Etcd { members, endpoints, lease: Some(lease), .. } = self {
            let err = |source| StoreError::Etcd { endpoints: endpoints.clone(), source };
            let lease = *lease;
            let alive = members
                .run(|mut c| async move {
                    let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                    keeper.keep_alive().await?;
                    Ok(stream.message().await?.is_some_and(|r| r.ttl() > 0))
                })
                .await
                .map_err(err)?;
            if alive {
                return Ok(());
            }
        }
        self.save(id, ttl).await
    }

    /// Removes the stored ID.
    pub(crate) async fn clear(&mut self) -> Result<(), StoreError> {
        match self {
            Store::Etcd { members, endpoints, key, lease } => {
                let key = key.as_str();
                members
                    .run(|mut c| async move { c.delete(key, None).await })
                    .await
                    .map_err(|source| StoreError::Etcd { endpoints: endpoints.clone(), source })?;
                *lease = None;
                Ok(())
            }
            Store::Api { client, name } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(source) => Err(StoreError::Api { name: name.clone(), source }),
                }
            }
        }
    }

    /// Where the ID is kept (for logs).
    pub(crate) fn describe(&self) -> String {
        match self {
            Store::Etcd { endpoints, key, .. } => format!("etcd {endpoints} key {key}"),
            Store::Api { name, .. } => format!("ConfigMap {NAMESPACE}/{name}"),
        }
    }
}

async fn ensure_namespace(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": NAMESPACE } }))
        .map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_names_are_dns_labels() {
        assert_eq!(configmap_name("Kubernetes"), "km-framework-id-kubernetes");
        assert_eq!(configmap_name("My Framework_1"), "km-framework-id-my-framework-1");
        assert_eq!(configmap_name("***"), "km-framework-id-framework");
    }
}
