//! Reading the ConfigMaps and Secrets a static pod refers to from the API
//! server; the pure part (what is referenced, rewriting the pod, kubelet's
//! error messages) is [`km_runtime::config_sources`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use km_runtime::config_sources::{Fetched, Refs};
use kube::Api;

pub use km_runtime::config_sources::{
    ConfigError, config_error_status, referenced, resolve, write_files,
};

/// Errors fetching referenced objects.
#[derive(Debug, thiserror::Error)]
#[error("getting {kind} {namespace}/{name}: {source}")]
pub struct FetchError {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// Reads the referenced objects from the API server.
pub async fn fetch(
    client: &kube::Client,
    namespace: &str,
    refs: &Refs,
) -> Result<Fetched, FetchError> {
    let mut out = Fetched::default();
    let cms: Api<k8s::ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in &refs.config_maps {
        let err = |source| FetchError {
            kind: "configmap",
            namespace: namespace.to_owned(),
            name: name.clone(),
            source,
        };
        let cm = cms.get_opt(name).await.map_err(err)?;
        out.config_maps.insert(
            name.clone(),
            cm.map(|cm| {
                let mut data: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                data
            }),
        );
    }
    let secrets: Api<k8s::Secret> = Api::namespaced(client.clone(), namespace);
    for name in &refs.secrets {
        let err = |source| FetchError {
            kind: "secret",
            namespace: namespace.to_owned(),
            name: name.clone(),
            source,
        };
        let s = secrets.get_opt(name).await.map_err(err)?;
        out.secrets.insert(
            name.clone(),
            s.map(|s| {
                let mut data: BTreeMap<String, Vec<u8>> =
                    s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                data.extend(
                    s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())),
                );
                data
            }),
        );
    }
    Ok(out)
}
