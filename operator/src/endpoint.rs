//! The controllers the operator runs (one per `Cluster`, while it holds the Lease) and the
//! gRPC endpoint brokers reach them by: one port for every cluster, each call routed by the
//! [`weir_proto::CLUSTER_HEADER`] the broker sends. A replica that does not hold the Lease
//! answers NOT_CONTROLLER, and a broker given several addresses moves on to the next.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use tonic::{Request, Response, Status};
use weir_controller::StoreError;
use weir_controller::server::{Controller, ControllerService, Timing};
use weir_proto::v1;
use weir_proto::v1::controller_server::Controller as ControllerApi;
use weir_proto::{ClusterSecret, Reason};

use crate::store::KubeStore;

/// A `Cluster`'s controller.
pub type ClusterController = Arc<Controller<KubeStore>>;

#[derive(Debug)]
struct Running {
    controller: ClusterController,
    liveness: tokio::task::JoinHandle<()>,
}

/// The controllers of this operator replica, by `namespace/name` of their `Cluster`.
#[derive(Debug, Default)]
pub struct Registry {
    /// Held while a controller starts or stops (API calls): one at a time.
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    /// The running controllers, for routing calls without waiting on a start, each with the
    /// secret its brokers must present.
    routes: std::sync::RwLock<HashMap<String, (ClusterController, ClusterSecret)>>,
    leading: AtomicBool,
    /// The Lease holder as last seen, for the errors of a replica that does not hold it.
    holder: std::sync::Mutex<Option<String>>,
}

pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Registry {
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    pub fn set_leading(&self, leading: bool, holder: Option<String>) {
        self.leading.store(leading, Ordering::Release);
        *self.holder.lock().unwrap_or_else(|p| p.into_inner()) = holder;
    }

    pub fn holder(&self) -> Option<String> {
        self.holder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The running controller of `key`, if any.
    pub async fn get(&self, key: &str) -> Option<ClusterController> {
        self.routed(key).map(|(controller, _)| controller)
    }

    /// The running controller of `key` and its cluster's secret.
    fn routed(&self, key: &str) -> Option<(ClusterController, ClusterSecret)> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn route(&self, key: &str, controller: Option<(&ClusterController, &ClusterSecret)>) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        match controller {
            Some((c, secret)) => routes.insert(key.to_string(), (Arc::clone(c), secret.clone())),
            None => routes.remove(key),
        };
    }

    /// The controller of a `Cluster`, started (at `epoch` or later) when it is not running
    /// or was fenced; calls naming the cluster must carry `secret`.
    ///
    /// # Errors
    /// The store's, at start.
    pub async fn ensure(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
        secret: &ClusterSecret,
        timing: Timing,
        epoch: i32,
    ) -> Result<ClusterController, StoreError> {
        let key = key(namespace, name);
        let mut running = self.running.lock().await;
        if let Some(r) = running.get(&key) {
            if !r.controller.is_fenced().await {
                self.route(&key, Some((&r.controller, secret)));
                return Ok(Arc::clone(&r.controller));
            }
            tracing::warn!(cluster = %key, "the controller was fenced; starting it again");
            if let Some(r) = running.remove(&key) {
                self.route(&key, None);
                stop(r);
            }
        }
        let store = KubeStore::new(client.clone(), namespace, name);
        let controller = Controller::start_at(store, timing, epoch).await?;
        let liveness = tokio::spawn(Arc::clone(&controller).run_liveness());
        tracing::info!(cluster = %key, "controller started");
        self.route(&key, Some((&controller, secret)));
        running.insert(
            key,
            Running {
                controller: Arc::clone(&controller),
                liveness,
            },
        );
        Ok(controller)
    }

    /// How many controllers run.
    pub async fn running(&self) -> usize {
        self.running.lock().await.len()
    }

    /// Stops the controller of `key` (its `Cluster` is gone).
    pub async fn stop(&self, key: &str) {
        if let Some(r) = self.running.lock().await.remove(key) {
            self.route(key, None);
            tracing::info!(cluster = %key, "controller stopped");
            stop(r);
        }
    }

    /// Stops every controller (the Lease is lost).
    pub async fn stop_all(&self) {
        let mut running = self.running.lock().await;
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for (key, r) in running.drain() {
            tracing::info!(cluster = %key, "controller stopped");
            stop(r);
        }
    }
}

fn stop(running: Running) {
    running.liveness.abort();
    running.controller.stop_watches();
}

/// The gRPC `Controller` service of the operator: every call goes to its cluster's
/// controller.
#[derive(Clone)]
pub struct Endpoint {
    pub registry: Arc<Registry>,
    pub client: Client,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A registering broker's rack, when its Cluster has `spec.rack`: the value of the
    /// topology key on the node its pod (`<cluster>-<id>`) runs on. `None` (the broker's own
    /// `rack`, if any) when there is no such pod, node or label.
    async fn node_rack(&self, cluster: &str, broker: i32) -> Option<String> {
        let (namespace, name) = cluster.split_once('/')?;
        let clusters: kube::Api<crate::crd::Cluster> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let key = match clusters.get_opt(name).await {
            Ok(found) => found?.spec.rack?.topology_key,
            Err(e) => {
                tracing::warn!(cluster, error = %weir_proto::Chain(&e), "cannot read the Cluster for the broker's rack");
                return None;
            }
        };
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let pod = format!("{name}-{broker}");
        let node = match pods.get_opt(&pod).await {
            Ok(found) => found?.spec?.node_name?,
            Err(e) => {
                tracing::warn!(%pod, error = %weir_proto::Chain(&e), "cannot read the broker's pod for its rack");
                return None;
            }
        };
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(self.client.clone());
        match nodes.get_opt(&node).await {
            Ok(found) => found?.metadata.labels?.get(&key).cloned(),
            Err(e) => {
                tracing::warn!(%node, error = %weir_proto::Chain(&e), "cannot read the broker's node for its rack");
                None
            }
        }
    }

    async fn route<T>(&self, request: &Request<T>) -> Result<ControllerService<KubeStore>, Status> {
        self.route_named(request)
            .await
            .map(|(_, controller)| controller)
    }

    /// [`Endpoint::route`], with the cluster (`namespace/name`) the call named.
    async fn route_named<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(String, ControllerService<KubeStore>), Status> {
        if !self.registry.is_leading() {
            let holder = self
                .registry
                .holder()
                .unwrap_or_else(|| "unknown yet".into());
            return Err(Reason::NotController.status(format!(
                "this operator replica does not hold the controller Lease (its holder: {holder})"
            )));
        }
        let cluster = request
            .metadata()
            .get(weir_proto::CLUSTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Reason::InvalidRequest.status(format!(
                    "the operator's controller serves several clusters: the broker must name its own (`cluster = \"namespace/name\"`, sent as {})",
                    weir_proto::CLUSTER_HEADER
                ))
            })?;
        match self.registry.routed(cluster) {
            Some((controller, secret)) => {
                secret.check(request)?;
                Ok((cluster.to_string(), ControllerService(controller)))
            }
            None => Err(Status::failed_precondition(format!(
                "no Cluster {cluster} has a controller here (yet): is the Cluster resource there?"
            ))),
        }
    }
}

type MetadataStream = <ControllerService<KubeStore> as ControllerApi>::WatchMetadataStream;

#[tonic::async_trait]
impl ControllerApi for Endpoint {
    async fn register_broker(
        &self,
        request: Request<v1::RegisterBrokerRequest>,
    ) -> Result<Response<v1::RegisterBrokerResponse>, Status> {
        let (cluster, controller) = self.route_named(&request).await?;
        let mut request = request;
        let broker = request.get_ref().broker_id;
        if let Some(rack) = self.node_rack(&cluster, broker).await {
            tracing::info!(cluster, broker, %rack, "the broker's rack, from its node");
            request.get_mut().rack = Some(rack);
        }
        controller.register_broker(request).await
    }

    async fn broker_heartbeat(
        &self,
        request: Request<v1::BrokerHeartbeatRequest>,
    ) -> Result<Response<v1::BrokerHeartbeatResponse>, Status> {
        self.route(&request).await?.broker_heartbeat(request).await
    }

    async fn alter_isr(
        &self,
        request: Request<v1::AlterIsrRequest>,
    ) -> Result<Response<v1::ClusterPartition>, Status> {
        self.route(&request).await?.alter_isr(request).await
    }

    type WatchMetadataStream = MetadataStream;

    async fn watch_metadata(
        &self,
        request: Request<v1::WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        self.route(&request).await?.watch_metadata(request).await
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<v1::AllocateProducerIdsRequest>,
    ) -> Result<Response<v1::AllocateProducerIdsResponse>, Status> {
        self.route(&request)
            .await?
            .allocate_producer_ids(request)
            .await
    }

    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::ClusterTopic>, Status> {
        self.route(&request).await?.create_topic(request).await
    }

    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        self.route(&request).await?.delete_topic(request).await
    }

    async fn alter_topic_config(
        &self,
        request: Request<v1::AlterTopicConfigRequest>,
    ) -> Result<Response<v1::ClusterTopic>, Status> {
        self.route(&request)
            .await?
            .alter_topic_config(request)
            .await
    }

    async fn add_partitions(
        &self,
        request: Request<v1::AddPartitionsRequest>,
    ) -> Result<Response<v1::ClusterTopic>, Status> {
        self.route(&request).await?.add_partitions(request).await
    }

    async fn ensure_internal_topic(
        &self,
        request: Request<v1::EnsureInternalTopicRequest>,
    ) -> Result<Response<v1::ClusterTopic>, Status> {
        self.route(&request)
            .await?
            .ensure_internal_topic(request)
            .await
    }

    async fn controlled_shutdown(
        &self,
        request: Request<v1::ControlledShutdownRequest>,
    ) -> Result<Response<v1::ControlledShutdownResponse>, Status> {
        self.route(&request)
            .await?
            .controlled_shutdown(request)
            .await
    }

    async fn alter_reassignments(
        &self,
        request: Request<v1::AlterReassignmentsRequest>,
    ) -> Result<Response<v1::AlterReassignmentsResponse>, Status> {
        self.route(&request)
            .await?
            .alter_reassignments(request)
            .await
    }

    async fn list_reassignments(
        &self,
        request: Request<v1::ListReassignmentsRequest>,
    ) -> Result<Response<v1::ListReassignmentsResponse>, Status> {
        self.route(&request)
            .await?
            .list_reassignments(request)
            .await
    }
}
