//! The endpoints controller: keeps each selector Service's Endpoints as
//! [`crate::endpoints::desired`] says, and removes the Endpoints of Services that are gone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::ObjectRef;

use crate::Ctx;
use crate::endpoints::{self, CONTAINER_PORT_ANNOTATION};
use crate::queue;
use crate::workloads::SyncError;

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Syncs the Endpoints of Service `key`.
pub async fn sync(ctx: &Ctx, key: &str) -> Result<(), SyncError> {
    let (ns, name) = queue::split(key);
    let ns = ns.unwrap_or("default");
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), ns);
    let existing = ctx.caches.endpoints.get(&ObjectRef::new(name).within(ns));
    let Some(svc) = ctx.caches.services.get(&ObjectRef::new(name).within(ns)) else {
        // The Service is gone: so are its Endpoints (when the cache still has them).
        if existing.is_some() {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_code(&e, 404) => {}
                Err(source) => {
                    return Err(SyncError::Api {
                        what: format!("deleting endpoints {key}"),
                        source,
                    });
                }
            }
        }
        return Ok(());
    };
    let pods = ctx.caches.pods_in(ns);
    let refs: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let Some((subsets, ours)) = endpoints::desired(&svc, &refs, ctx.endpoint_mode) else {
        return Ok(());
    };
    if existing.as_ref().is_some_and(|e| endpoints::up_to_date(e, &subsets, &ours)) {
        return Ok(());
    }
    // Annotations of others stay; ours are replaced.
    let mut annotations: BTreeMap<String, String> = existing
        .as_ref()
        .and_then(|e| e.metadata.annotations.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(CONTAINER_PORT_ANNOTATION))
        .collect();
    annotations.extend(ours);
    let object = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: svc.metadata.labels.clone(),
            annotations: (!annotations.is_empty()).then_some(annotations),
            resource_version: existing.as_ref().and_then(|e| e.metadata.resource_version.clone()),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    let result = match existing {
        Some(_) => api.replace(name, &PostParams::default(), &object).await,
        None => api.create(&PostParams::default(), &object).await,
    };
    match result {
        Ok(_) => Ok(()),
        // Someone else wrote first: the watch brings their version and a new sync.
        Err(e) if is_code(&e, 409) => Ok(()),
        Err(source) => Err(SyncError::Api { what: format!("writing endpoints {key}"), source }),
    }
}
