//! The watch cache: one watch per kind (kube-runtime's watcher and reflector), a store each
//! that every controller reads, and for every change a call to a router that queues the keys
//! of the objects whose controllers should look again.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, ReplicationController, Service};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;

/// Read handles of every store.
#[derive(Clone)]
pub struct Caches {
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
    pub controllers: Store<ReplicationController>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub endpoints: Store<Endpoints>,
    pub nodes: Store<Node>,
    pub namespaces: Store<Namespace>,
    pub jobs: Store<Job>,
    pub cronjobs: Store<CronJob>,
}

/// A change seen by a watch (the object as it now is, or as it was when deleted).
pub enum Change {
    Pod(Arc<Pod>, bool),
    ReplicaSet(Arc<ReplicaSet>, bool),
    Controller(Arc<ReplicationController>, bool),
    Deployment(Arc<Deployment>, bool),
    Service(Arc<Service>, bool),
    Endpoints(Arc<Endpoints>, bool),
    Node(Arc<Node>, bool),
    Namespace(Arc<Namespace>, bool),
    Job(Arc<Job>, bool),
    CronJob(Arc<CronJob>, bool),
    /// A ConfigMap or Secret of this namespace changed content (or appeared, or went).
    Config(String),
}

/// Where changes go.
pub type Router = Arc<dyn Fn(Change) + Send + Sync>;

fn watch<K>(client: &kube::Client, route: Router, wrap: fn(Arc<K>, bool) -> Change) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store::<K>();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    route(wrap(Arc::new(o), false))
                }
                Ok(watcher::Event::Delete(o)) => route(wrap(Arc::new(o), true)),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => tracing::warn!(kind = K::kind(&()).as_ref(), "watch: {e} (retrying)"),
            }
        }
    });
    reader
}

impl Caches {
    /// Starts every watch; returns once each store holds its first complete list.
    pub async fn start(client: &kube::Client, route: Router) -> Caches {
        let caches = Caches {
            pods: watch(client, route.clone(), Change::Pod),
            replicasets: watch(client, route.clone(), Change::ReplicaSet),
            controllers: watch(client, route.clone(), Change::Controller),
            deployments: watch(client, route.clone(), Change::Deployment),
            services: watch(client, route.clone(), Change::Service),
            endpoints: watch(client, route.clone(), Change::Endpoints),
            nodes: watch(client, route.clone(), Change::Node),
            namespaces: watch(client, route.clone(), Change::Namespace),
            jobs: watch(client, route.clone(), Change::Job),
            cronjobs: watch(client, route, Change::CronJob),
        };
        let _ = futures::join!(
            caches.pods.wait_until_ready(),
            caches.replicasets.wait_until_ready(),
            caches.controllers.wait_until_ready(),
            caches.deployments.wait_until_ready(),
            caches.services.wait_until_ready(),
            caches.endpoints.wait_until_ready(),
            caches.nodes.wait_until_ready(),
            caches.namespaces.wait_until_ready(),
            caches.jobs.wait_until_ready(),
            caches.cronjobs.wait_until_ready(),
        );
        caches
    }

    /// The pods of a namespace.
    pub fn pods_in(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods.state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
    }
}
