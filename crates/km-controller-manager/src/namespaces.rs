//! The namespace controller: a namespace being deleted (its `deletionTimestamp` set, the
//! `kubernetes` finalizer in `spec.finalizers`) has everything in it deleted — every namespaced
//! kind the API server lists in its discovery documents, so kinds added later are covered —
//! and, once nothing is left, loses the finalizer through `finalize`, which completes its
//! deletion.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::reflector::ObjectRef;

use crate::Ctx;
use crate::workloads::SyncError;

pub const FINALIZER: &str = "kubernetes";

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Api { what, source }
}

/// Deletes the contents of namespace `name` if it is being deleted; finalizes it when empty.
pub async fn sync(ctx: &Ctx, name: &str) -> Result<Option<Duration>, SyncError> {
    let Some(ns) = ctx.caches.namespaces.get(&ObjectRef::new(name)) else { return Ok(None) };
    let finalizing = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if ns.metadata.deletion_timestamp.is_none() || !finalizing {
        return Ok(None);
    }
    let discovery =
        Discovery::new(ctx.client.clone()).run().await.map_err(api_err("discovering the API"))?;
    let mut left = 0usize;
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            let namespaced = matches!(caps.scope, Scope::Namespaced);
            if !namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), name, &resource);
            let items = api
                .list(&ListParams::default())
                .await
                .map_err(api_err(format!("listing {} in namespace {name}", resource.plural)))?
                .items;
            for obj in items {
                left += 1;
                let Some(object) = obj.metadata.name.as_deref() else { continue };
                if obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match api.delete(object, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => {
                        return Err(api_err(format!(
                            "deleting {} {name}/{object}",
                            resource.plural
                        ))(e));
                    }
                }
            }
        }
    }
    if left > 0 {
        tracing::debug!(namespace = name, left, "namespace being emptied");
        return Ok(Some(Duration::from_secs(1)));
    }
    let mut done = (*ns).clone();
    if let Some(spec) = done.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != FINALIZER)
                .collect(),
        );
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.replace_subresource("finalize", name, &PostParams::default(), &done).await {
        Ok(_) => {
            tracing::info!(namespace = name, "namespace emptied and finalized");
            Ok(None)
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            Ok(Some(Duration::from_secs(1)))
        }
        Err(e) => Err(api_err(format!("finalizing namespace {name}"))(e)),
    }
}
