//! The reconcilers: level-triggered and idempotent, each reading the world and making one
//! step towards the spec, reporting through status conditions and Events, and requeued
//! every `resync` to refresh what no watch event announces (broker liveness, lag).
//!
//! - A `Cluster` yields its objects (server-side applied, owned by it), a PodDisruptionBudget
//!   in the `policy` version the server serves, and its controller.
//! - A `Topic` is created, grown and reconfigured through its cluster's controller; what
//!   cannot be done is refused with a condition; deletion goes through a finalizer and
//!   deletes the topic's data.
//! - A `ConsumerGroup` reports state, members and lag, and applies `resetOffsets` once per
//!   generation while the group has no members.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::Request;
use weir_controller::server::{ControllerService, Timing};
use weir_controller::topic_config;
use weir_proto::v1::controller_server::Controller as ControllerApi;
use weir_proto::{Reason, v1};

use crate::conditions::{condition, find, merge};
use crate::crd::{Cluster, ConsumerGroup, ResetTarget, Topic, TopicLag};
use crate::endpoint::{Registry, key};
use crate::group::{ResetPlan, approximate_seconds, reset_plan};
use crate::metrics::Metrics;
use crate::roll::{BrokerPod, RollStep};
use crate::scale::ScaleStep;
use crate::store::topic_name;
use crate::topic::{Observed, TopicPlan, plan, ready_condition};

const FIELD_MANAGER: &str = "weir-operator";
const CLUSTER_FINALIZER: &str = "weir.dev/cluster";
const TOPIC_FINALIZER: &str = "weir.dev/topic";

/// What the reconcilers share, for one term as Lease holder.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub registry: Arc<Registry>,
    pub settings: Settings,
    /// The Lease's transition count when this term began: the least controller epoch.
    pub epoch: i32,
    pub metrics: Arc<Metrics>,
    /// `policy/v1` or `policy/v1beta1`, as the server serves PodDisruptionBudgets (`None`:
    /// neither), found once.
    disruption_budgets: tokio::sync::OnceCell<Option<String>>,
    /// A client of each cluster's brokers (by `namespace/name`), kept between reconciliations
    /// and dropped when a call through it fails.
    clients: tokio::sync::Mutex<HashMap<String, weir_client::Client>>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where brokers in pods reach the operator's controller endpoint (its Service).
    pub controller_address: String,
    /// This replica's name (the pod's), shown as the Cluster's controller.
    pub identity: String,
    pub timing: Timing,
    /// How often every resource is reconciled again without a change.
    pub resync: Duration,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        registry: Arc<Registry>,
        settings: Settings,
        epoch: i32,
        metrics: Arc<Metrics>,
    ) -> Context {
        Context {
            client,
            recorder,
            registry,
            settings,
            epoch,
            metrics,
            disruption_budgets: tokio::sync::OnceCell::new(),
            clients: tokio::sync::Mutex::default(),
        }
    }

    /// The client of cluster `key` kept from before, or one connected to the first of its
    /// live brokers that answers.
    async fn client(
        &self,
        key: &str,
        state: &weir_controller::ClusterState,
    ) -> Option<weir_client::Client> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(key) {
            return Some(client.clone());
        }
        for broker in state.alive_brokers() {
            if let Ok(client) = weir_client::Client::connect(&broker.address).await {
                clients.insert(key.to_string(), client.clone());
                return Some(client);
            }
        }
        None
    }

    async fn forget_client(&self, key: &str) {
        self.clients.lock().await.remove(key);
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %weir_proto::Chain(&e), reason, "could not record an Event");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0}")]
    Unavailable(String),
}

/// Runs the three reconcilers until the future is dropped (the term ends).
pub async fn run(context: Arc<Context>, namespace: Option<String>) {
    let client = context.client.clone();
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let clusters = Controller::new(api::<Cluster>(&client, ns), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, ns), watcher::Config::default())
        .run(
            reconcile_cluster,
            error_policy::<Cluster>,
            Arc::clone(&context),
        );
    let topics = Controller::new(api::<Topic>(&client, ns), watcher::Config::default()).run(
        reconcile_topic,
        error_policy::<Topic>,
        Arc::clone(&context),
    );
    let groups = Controller::new(
        api::<ConsumerGroup>(&client, ns),
        watcher::Config::default(),
    )
    .run(
        reconcile_group,
        error_policy::<ConsumerGroup>,
        Arc::clone(&context),
    );
    tokio::join!(
        drain("Cluster", clusters),
        drain("Topic", topics),
        drain("ConsumerGroup", groups)
    );
}

async fn drain<T>(
    kind: &'static str,
    stream: impl tokio_stream::Stream<
        Item = Result<T, kube::runtime::controller::Error<Error, watcher::Error>>,
    >,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(result) = stream.next().await {
        match result {
            // The watch itself failed (RBAC, a missing CRD): nothing is reconciled until it
            // recovers, and only this says why.
            Err(e @ kube::runtime::controller::Error::QueueError(_)) => {
                tracing::warn!(kind, error = %weir_proto::Chain(&e), "cannot watch the resources")
            }
            // Failed reconciliations are logged by the error policy.
            Err(e) => {
                tracing::debug!(kind, error = %weir_proto::Chain(&e), "reconciliation not done")
            }
            Ok(_) => {}
        }
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let kind = match K::kind(&()).as_ref() {
        "Cluster" => "Cluster",
        "Topic" => "Topic",
        _ => "ConsumerGroup",
    };
    context.metrics.failed(kind);
    tracing::warn!(kind, name = %object.meta().name.clone().unwrap_or_default(), error = %weir_proto::Chain(error), "reconciliation failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Merges `status` into the object's status (no precondition: these fields are the
/// reconciler's alone).
async fn patch_status<K>(api: &Api<K>, name: &str, status: serde_json::Value) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Reports a failure on `object`: `next` (its first condition names the reason and message)
/// merged into `previous`, a warning Event when a condition changed, and the conditions
/// written, with `generation` as observed when given (not when the spec was left unapplied).
async fn report_failure<K>(
    context: &Context,
    object: &K,
    previous: &[Condition],
    next: Vec<Condition>,
    action: &str,
    observed: Option<Option<i64>>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let (reason, message) = next
        .first()
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default();
    let (conditions, changed) = merge(previous, next);
    if changed {
        context.event(object, true, &reason, action, message).await;
    }
    let api: Api<K> = Api::namespaced(
        context.client.clone(),
        &object.meta().namespace.clone().unwrap_or_default(),
    );
    let status = match observed {
        Some(generation) => json!({ "conditions": conditions, "observedGeneration": generation }),
        None => json!({ "conditions": conditions }),
    };
    patch_status(&api, &object.name_any(), status).await
}

// ---------------------------------------------------------------------------------------
// Cluster

async fn reconcile_cluster(cluster: Arc<Cluster>, context: Arc<Context>) -> Result<Action, Error> {
    context.metrics.reconciled("Cluster");
    let namespace = cluster.namespace().unwrap_or_default();
    let api: Api<Cluster> = Api::namespaced(context.client.clone(), &namespace);
    finalizer(&api, CLUSTER_FINALIZER, cluster, |event| async {
        match event {
            Finalizer::Apply(cluster) => apply_cluster(&cluster, &context).await,
            Finalizer::Cleanup(cluster) => {
                context
                    .registry
                    .stop(&key(&namespace, &cluster.name_any()))
                    .await;
                context
                    .event(
                        &*cluster,
                        false,
                        "ControllerStopped",
                        "Delete",
                        "the cluster's controller stopped; its objects go with their owner".into(),
                    )
                    .await;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply_cluster(cluster: &Cluster, context: &Context) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let api: Api<Cluster> = Api::namespaced(context.client.clone(), &namespace);
    let generation = cluster.metadata.generation;
    let status = cluster.status.clone().unwrap_or_default();
    let client = &context.client;
    let mut next = Vec::new();
    let secret = crate::secret::ensure(client, cluster).await;
    let controller = match &secret {
        Ok(secret) => context
            .registry
            .ensure(
                client,
                &namespace,
                &name,
                secret,
                context.settings.timing,
                context.epoch,
            )
            .await
            .map_err(|e| weir_proto::error_chain(&e)),
        Err(e) => Err(weir_proto::error_chain(e)),
    };
    let state = match &controller {
        Ok(controller) => Some(controller.state().await),
        Err(e) => {
            next.push(condition(
                "Degraded",
                true,
                "ControllerUnavailable",
                format!("the cluster's controller cannot start: {e}"),
                generation,
            ));
            if find(&status.conditions, "Degraded").map(|c| c.reason.as_str())
                != Some("ControllerUnavailable")
            {
                context
                    .event(
                        cluster,
                        true,
                        "ControllerUnavailable",
                        "Start",
                        e.to_string(),
                    )
                    .await;
            }
            None
        }
    };
    let objects =
        match crate::objects::cluster_objects(cluster, &context.settings.controller_address) {
            Ok(objects) => objects,
            Err(e) => {
                report_failure(
                    context,
                    cluster,
                    &status.conditions,
                    vec![
                        condition("Ready", false, "InvalidSpec", e.to_string(), generation),
                        condition("Degraded", true, "InvalidSpec", e.to_string(), generation),
                    ],
                    "Validate",
                    Some(generation),
                )
                .await?;
                return Ok(Action::await_change());
            }
        };
    let mut objects = objects;
    if state.is_none() {
        // Which brokers hold replicas is unknown: never scale down blind.
        let current = Api::<StatefulSet>::namespaced(client.clone(), &namespace)
            .get_opt(&objects.brokers.name_any())
            .await?
            .and_then(|s| s.spec?.replicas);
        if let (Some(current), Some(spec)) = (current, objects.brokers.spec.as_mut()) {
            spec.replicas = Some(current.max(cluster.spec.brokers));
        }
    }
    // Scaling: drain brokers past spec.brokers before the StatefulSet shrinks; give new
    // brokers their share.
    let mut scale = ScaleStep::Steady;
    if let (Some(state), Ok(controller)) = (&state, &controller) {
        let (step, replicas) = crate::scale::next_step(
            cluster.spec.brokers,
            state,
            cluster.spec.auto_rebalance.unwrap_or(true),
        );
        if let Some(spec) = objects.brokers.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        match &step {
            ScaleStep::Move { draining, moves } => {
                let wire: Vec<v1::PartitionReassignment> = moves
                    .iter()
                    .map(|m| v1::PartitionReassignment {
                        topic: m.topic.clone(),
                        partition: m.partition,
                        replicas: m.replicas.clone(),
                    })
                    .collect();
                let results = controller
                    .alter_reassignments(&wire)
                    .await
                    .map_err(|s| Error::Unavailable(weir_proto::status_text(&s)))?;
                let refused = results.iter().filter(|r| !r.error.is_empty()).count();
                let what = if draining.is_empty() {
                    "giving new brokers their share".to_string()
                } else {
                    format!("draining brokers {draining:?} before the StatefulSet shrinks")
                };
                context
                    .event(
                        cluster,
                        refused > 0,
                        if draining.is_empty() {
                            "Rebalancing"
                        } else {
                            "Draining"
                        },
                        "Scale",
                        format!(
                            "{what}: {} partitions reassigned{}",
                            moves.len() - refused,
                            if refused > 0 {
                                format!(", {refused} refused (see the operator's log)")
                            } else {
                                String::new()
                            }
                        ),
                    )
                    .await;
            }
            ScaleStep::Impossible(why) => {
                let message = format!(
                    "spec.brokers is {} but the brokers past it cannot be drained: {why}; the StatefulSet keeps {replicas} brokers",
                    cluster.spec.brokers
                );
                if find(&status.conditions, "Degraded").map(|c| c.reason.as_str())
                    != Some("ScaleDownBlocked")
                {
                    context
                        .event(cluster, true, "ScaleDownBlocked", "Scale", message.clone())
                        .await;
                }
                next.push(condition(
                    "Degraded",
                    true,
                    "ScaleDownBlocked",
                    message,
                    generation,
                ));
            }
            ScaleStep::Steady => {
                release_removed_brokers(cluster, context, controller, state).await?;
            }
            ScaleStep::Moving { .. } => {}
        }
        scale = step;
    }
    let applied = match apply_objects(cluster, context, &objects, &namespace).await {
        Ok(applied) => applied,
        Err(e) => {
            let message = format!(
                "the cluster's objects could not be applied: {}",
                weir_proto::error_chain(&e)
            );
            report_failure(
                context,
                cluster,
                &status.conditions,
                vec![condition(
                    "Ready",
                    false,
                    "ApplyFailed",
                    message,
                    generation,
                )],
                "Apply",
                None,
            )
            .await?;
            return Err(e);
        }
    };
    let (applied, budget) = applied;
    // The roll the operator owns: one broker at a time, only when it is safe.
    let roll = match &state {
        Some(state) => roll_brokers(cluster, context, state, &applied).await?,
        None => RollStep::Wait("the cluster's controller is not running".into()),
    };
    if status.observed_generation != generation {
        context
            .event(
                cluster,
                false,
                "Applied",
                "Apply",
                format!(
                    "applied generation {} (ConfigMap, Services, StatefulSet of {} brokers{})",
                    generation.unwrap_or(0),
                    cluster.spec.brokers,
                    budget
                        .as_deref()
                        .map_or(String::new(), |v| format!(", PodDisruptionBudget {v}"))
                ),
            )
            .await;
        if budget.is_none() {
            context
                .event(
                    cluster,
                    true,
                    "NoDisruptionBudget",
                    "Apply",
                    "the API server serves no policy/v1 or policy/v1beta1 PodDisruptionBudget: brokers are not protected from voluntary disruption".into(),
                )
                .await;
        }
    }

    let (registered, dead) = match &state {
        Some(state) => (
            state.alive_brokers().count(),
            state
                .brokers
                .values()
                // A broker scaled away (past spec.brokers, holding nothing) is not missed.
                .filter(|b| {
                    !b.alive
                        && (b.id < cluster.spec.brokers
                            || state
                                .topics
                                .values()
                                .flat_map(|t| &t.partitions)
                                .any(|p| p.replicas.contains(&b.id)))
                })
                .map(|b| b.id)
                .collect::<Vec<i32>>(),
        ),
        None => (0, Vec::new()),
    };
    context
        .metrics
        .set_controllers(context.registry.running().await);
    let desired = cluster.spec.brokers;
    let sts = applied.status.unwrap_or_default();
    let ready = sts.ready_replicas.unwrap_or(0);
    let updated = sts.updated_replicas.unwrap_or(0);
    let registered = i32::try_from(registered).unwrap_or(i32::MAX);
    let all_in = ready >= desired && registered >= desired;
    next.push(condition(
        "Ready",
        all_in,
        if all_in {
            "BrokersReady"
        } else {
            "BrokersNotReady"
        },
        format!("{ready} of {desired} brokers ready, {registered} registered with the controller"),
        generation,
    ));
    let rolling = updated < desired
        || sts.observed_generation < applied.metadata.generation
        || !matches!(roll, RollStep::UpToDate)
        || matches!(scale, ScaleStep::Move { .. } | ScaleStep::Moving { .. });
    let (reason, detail) = match (&scale, &roll) {
        (
            ScaleStep::Moving {
                draining,
                partitions,
            },
            _,
        ) if !draining.is_empty() => (
            "Draining",
            format!("; draining brokers {draining:?}: {partitions} partitions still moving"),
        ),
        (ScaleStep::Moving { partitions, .. }, _) => {
            ("Rebalancing", format!("; {partitions} partitions moving"))
        }
        (ScaleStep::Move { draining, moves }, _) => (
            if draining.is_empty() {
                "Rebalancing"
            } else {
                "Draining"
            },
            format!("; {} partitions starting to move", moves.len()),
        ),
        (_, roll) => roll_reason(roll, rolling),
    };
    next.push(condition(
        "Progressing",
        rolling,
        reason,
        format!("{updated} of {desired} brokers run the current spec{detail}"),
        generation,
    ));
    if let RollStep::Blocked(why) = &roll
        && find(&status.conditions, "Progressing").map(|c| c.reason.as_str()) != Some("RollBlocked")
    {
        context
            .event(
                cluster,
                true,
                "RollBlocked",
                "Roll",
                format!(
                    "no broker can restart without a partition going below its minimum ISR: {why}"
                ),
            )
            .await;
    }
    if !next.iter().any(|c| c.type_ == "Degraded") {
        next.push(if dead.is_empty() {
            condition("Degraded", false, "BrokersAlive", "every registered broker heartbeats", generation)
        } else {
            condition(
                "Degraded",
                true,
                "BrokersDead",
                format!("brokers {dead:?} missed their heartbeat deadline; their partitions moved to other replicas"),
                generation,
            )
        });
    }
    let (conditions, changed) = merge(&status.conditions, next);
    if changed {
        for c in &conditions {
            if find(&status.conditions, &c.type_).map(|p| (&p.status, &p.reason))
                != Some((&c.status, &c.reason))
            {
                // Only a degraded cluster warns: not ready while starting, or progressing
                // through a roll, is what a healthy cluster does.
                let warning = c.type_ == "Degraded" && c.status == "True";
                context
                    .event(cluster, warning, &c.reason, "Observe", c.message.clone())
                    .await;
            }
        }
    }
    patch_status(
        &api,
        &name,
        json!({
            "desiredBrokers": desired,
            "readyBrokers": ready,
            "registeredBrokers": registered,
            "controller": context.settings.identity,
            "conditions": conditions,
            "observedGeneration": generation,
        }),
    )
    .await?;
    Ok(match roll {
        // A roll under way is watched closely: the next broker goes as soon as it is safe.
        RollStep::Restart { .. } | RollStep::Wait(_) => {
            Action::requeue(context.settings.resync.min(Duration::from_secs(3)))
        }
        RollStep::UpToDate | RollStep::Blocked(_) => Action::requeue(context.settings.resync),
    })
}

/// The Progressing condition's reason and detail for a roll step.
fn roll_reason(roll: &RollStep, rolling: bool) -> (&'static str, String) {
    match roll {
        RollStep::UpToDate if !rolling => ("Stable", String::new()),
        RollStep::UpToDate => ("RollingOut", String::new()),
        RollStep::Restart { pod, .. } => ("RollingOut", format!("; restarting {pod}")),
        RollStep::Wait(why) => ("RollingOut", format!("; waiting: {why}")),
        RollStep::Blocked(why) => ("RollBlocked", format!("; blocked: {why}")),
    }
}

/// Once no broker past `spec.brokers` holds a replica and its Pod is gone: the controller
/// forgets it (when its session has expired) and its PersistentVolumeClaim is deleted, so
/// its volume is released (StatefulSets of this Kubernetes keep claims for ever).
async fn release_removed_brokers(
    cluster: &Cluster,
    context: &Context,
    controller: &crate::endpoint::ClusterController,
    state: &weir_controller::model::ClusterState,
) -> Result<(), Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let desired = cluster.spec.brokers;
    for id in state.brokers.keys().copied().filter(|id| *id >= desired) {
        match controller.forget_broker(id).await {
            Ok(true) => {
                tracing::info!(cluster = %name, broker = id, "a removed broker is forgotten")
            }
            Ok(false) => {}
            Err(status) => {
                tracing::warn!(cluster = %name, broker = id, error = %weir_proto::status_text(&status), "could not forget a removed broker")
            }
        }
    }
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(context.client.clone(), &namespace);
    let prefix = format!("data-{name}-");
    for claim in claims.list(&ListParams::default()).await?.items {
        let claim_name = claim.name_any();
        let Some(ordinal) = claim_name
            .strip_prefix(&prefix)
            .and_then(|o| o.parse::<i32>().ok())
        else {
            continue;
        };
        if ordinal < desired
            || claim.metadata.deletion_timestamp.is_some()
            || pods.get_opt(&format!("{name}-{ordinal}")).await?.is_some()
        {
            continue;
        }
        claims.delete(&claim_name, &DeleteParams::default()).await?;
        context
            .event(
                cluster,
                false,
                "VolumeReleased",
                "Scale",
                format!(
                    "broker {ordinal} was drained and removed: its claim {claim_name} is deleted"
                ),
            )
            .await;
    }
    Ok(())
}

/// One step of the brokers' roll (their StatefulSet is `OnDelete`): restarts the broker
/// [`crate::roll::next_step`] names by deleting its Pod, which the StatefulSet makes again
/// at the current revision; the broker hands its leaderships over as it stops.
async fn roll_brokers(
    cluster: &Cluster,
    context: &Context,
    state: &weir_controller::model::ClusterState,
    applied: &StatefulSet,
) -> Result<RollStep, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let selector = crate::objects::broker_labels(&name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let listed = pods.list(&ListParams::default().labels(&selector)).await?;
    let observed: Vec<BrokerPod> = listed
        .items
        .iter()
        .filter_map(|pod| {
            let pod_name = pod.name_any();
            let ordinal = pod_name.rsplit('-').next()?.parse().ok()?;
            Some(BrokerPod {
                ordinal,
                revision: pod.labels().get("controller-revision-hash").cloned(),
                ready: pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
                deleting: pod.metadata.deletion_timestamp.is_some(),
                name: pod_name,
            })
        })
        .collect();
    let default_min_isr = cluster
        .spec
        .topic_defaults
        .get("min.insync.replicas")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let update_revision = applied
        .status
        .as_ref()
        .and_then(|s| s.update_revision.as_deref());
    let step = crate::roll::next_step(
        &observed,
        cluster.spec.brokers,
        update_revision,
        state,
        default_min_isr,
    );
    if let RollStep::Restart { pod, broker } = &step {
        tracing::info!(cluster = %name, pod = %pod, broker, "rolling: restarting a broker");
        pods.delete(pod, &DeleteParams::default()).await?;
        context
            .event(
                cluster,
                false,
                "Restarting",
                "Roll",
                format!("restarting {pod} for the current spec; its leaderships move first (controlled shutdown), and the next broker waits until it is back in every ISR"),
            )
            .await;
    }
    Ok(step)
}

/// Server-side applies the objects of a Cluster; returns the StatefulSet as applied and the
/// PodDisruptionBudget's version.
async fn apply_objects(
    cluster: &Cluster,
    context: &Context,
    objects: &crate::objects::ClusterObjects,
    namespace: &str,
) -> Result<(StatefulSet, Option<String>), Error> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let client = &context.client;
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            &objects.config.name_any(),
            &apply,
            &Patch::Apply(&objects.config),
        )
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    for service in [&objects.headless, &objects.client] {
        services
            .patch(&service.name_any(), &apply, &Patch::Apply(service))
            .await?;
    }
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let applied = statefulsets
        .patch(
            &objects.brokers.name_any(),
            &apply,
            &Patch::Apply(&objects.brokers),
        )
        .await?;
    let budget = apply_disruption_budget(cluster, context, namespace).await?;
    Ok((applied, budget))
}

/// Applies the cluster's PodDisruptionBudget in the version the server serves; returns it.
async fn apply_disruption_budget(
    cluster: &Cluster,
    context: &Context,
    namespace: &str,
) -> Result<Option<String>, Error> {
    let version = context
        .disruption_budgets
        .get_or_try_init(|| async {
            for version in ["policy/v1", "policy/v1beta1"] {
                match context.client.list_api_group_resources(version).await {
                    Ok(list)
                        if list
                            .resources
                            .iter()
                            .any(|r| r.name == "poddisruptionbudgets") =>
                    {
                        tracing::info!(version, "PodDisruptionBudgets are served");
                        return Ok::<_, Error>(Some(version.to_string()));
                    }
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            tracing::warn!("this API server serves no PodDisruptionBudget");
            Ok(None)
        })
        .await?
        .clone();
    let Some(version) = version else {
        return Ok(None);
    };
    let budget = crate::objects::disruption_budget(cluster, &version)
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    let (group, v) = version.split_once('/').unwrap_or(("policy", "v1"));
    let resource = ApiResource {
        group: group.into(),
        version: v.into(),
        api_version: version.clone(),
        kind: "PodDisruptionBudget".into(),
        plural: "poddisruptionbudgets".into(),
    };
    Api::<DynamicObject>::namespaced_with(context.client.clone(), namespace, &resource)
        .patch(
            &cluster.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&budget),
        )
        .await?;
    Ok(Some(version))
}

// ---------------------------------------------------------------------------------------
// Topic

async fn reconcile_topic(topic: Arc<Topic>, context: Arc<Context>) -> Result<Action, Error> {
    context.metrics.reconciled("Topic");
    let namespace = topic.namespace().unwrap_or_default();
    let api: Api<Topic> = Api::namespaced(context.client.clone(), &namespace);
    finalizer(&api, TOPIC_FINALIZER, topic, |event| async {
        match event {
            Finalizer::Apply(topic) => apply_topic(&topic, &context).await,
            Finalizer::Cleanup(topic) => delete_topic(&topic, &context).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Why a topic's cluster cannot act now, as a condition `(reason, message, retry after)`.
async fn cluster_controller(
    context: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Result<ControllerService<crate::store::KubeStore>, (&'static str, String)>, Error> {
    let clusters: Api<Cluster> = Api::namespaced(context.client.clone(), namespace);
    let found = clusters.get_opt(cluster).await?;
    // A Cluster being deleted takes its topics with it: its Topics need nothing more.
    match found {
        None => {
            return Ok(Err((
                "ClusterNotFound",
                format!(
                    "there is no Cluster {cluster:?} in namespace {namespace:?}: create it, or fix spec.cluster"
                ),
            )));
        }
        Some(c) if c.metadata.deletion_timestamp.is_some() => {
            return Ok(Err((
                "ClusterNotFound",
                format!("Cluster {cluster:?} is being deleted, and its topics with it"),
            )));
        }
        Some(_) => {}
    }
    match context.registry.get(&key(namespace, cluster)).await {
        Some(controller) => Ok(Ok(ControllerService(controller))),
        None => Ok(Err((
            "ControllerNotReady",
            format!("waiting for the controller of Cluster {cluster:?} to start"),
        ))),
    }
}

async fn apply_topic(topic: &Topic, context: &Context) -> Result<Action, Error> {
    let namespace = topic.namespace().unwrap_or_default();
    let resource = topic.name_any();
    let api: Api<Topic> = Api::namespaced(context.client.clone(), &namespace);
    let generation = topic.metadata.generation;
    let status = topic.status.clone().unwrap_or_default();
    let name = topic_name(topic);
    let refused =
        |reason: &str, message: String| condition("Ready", false, reason, message, generation);

    let controller = match cluster_controller(context, &namespace, &topic.spec.cluster).await? {
        Ok(controller) => controller,
        Err((reason, message)) => {
            report_failure(
                context,
                topic,
                &status.conditions,
                vec![refused(reason, message)],
                "Reconcile",
                Some(generation),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    // The controller checks names and configs too (it is the authority); checked here first
    // so the condition names the field.
    let invalid = topic_config::validate_name(&name)
        .err()
        .map(|e| ("InvalidName", e))
        .or_else(|| {
            topic_config::validate_overrides(&topic.spec.config)
                .err()
                .map(|e| ("InvalidConfig", format!("spec.config: {e}")))
        });
    let state = controller.0.state().await;
    let existing = state.topics.get(&name);
    // Another resource already holds this topic (a user's Topic beside the one the controller
    // made for a topic created through the CLI, say): one resource per topic.
    let mut invalid = invalid;
    if invalid.is_none()
        && let Some(existing) = existing
        && status.topic_id.as_deref() != Some(existing.id.as_str())
    {
        let holder = api
            .list(&kube::api::ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|t| {
                t.name_any() != resource
                    && t.spec.cluster == topic.spec.cluster
                    && t.status.as_ref().and_then(|s| s.topic_id.as_deref())
                        == Some(existing.id.as_str())
            });
        if let Some(holder) = holder {
            invalid = Some((
                "DuplicateTopic",
                format!(
                    "topic {name} is held by Topic {}: one resource per topic; delete this one or that one",
                    holder.name_any()
                ),
            ));
        }
    }
    let plan = match invalid {
        Some((reason, message)) => TopicPlan::Refused { reason, message },
        None => {
            let observed = existing.map(|t| Observed {
                partitions: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
                // Where a move under way goes.
                replication_factor: i32::try_from(
                    t.partitions.first().map_or(0, |p| p.target().len()),
                )
                .unwrap_or(i32::MAX),
                config: t.config.clone(),
            });
            plan(&name, &topic.spec, observed.as_ref())
        }
    };
    let outcome = match &plan {
        TopicPlan::Create {
            partitions,
            replication_factor,
            config,
        } => controller
            .create_topic(Request::new(v1::CreateTopicRequest {
                name: name.clone(),
                partitions: *partitions,
                replication_factor: *replication_factor,
                config: config.clone().into_iter().collect(),
            }))
            .await
            .map(|_| {
                format!(
                    "created topic {name}: {partitions} partitions × {replication_factor} replicas"
                )
            }),
        TopicPlan::Update {
            partitions,
            replication_factor,
            set,
            delete,
        } => {
            let mut done = Vec::new();
            let mut result = Ok(());
            if let Some(factor) = replication_factor {
                result = change_replication_factor(&controller, &name, *factor)
                    .await
                    .map(|moved| {
                        done.push(format!(
                            "moving to {factor} replicas per partition ({moved} partitions reassigned; see the partitions' adding/removing)"
                        ));
                    });
            }
            if let (Ok(()), Some(partitions)) = (&result, partitions) {
                result = controller
                    .add_partitions(Request::new(v1::AddPartitionsRequest {
                        name: name.clone(),
                        partitions: *partitions,
                    }))
                    .await
                    .map(|_| done.push(format!("grew to {partitions} partitions")));
            }
            if result.is_ok() && (!set.is_empty() || !delete.is_empty()) {
                result = controller
                    .alter_topic_config(Request::new(v1::AlterTopicConfigRequest {
                        name: name.clone(),
                        set: set.clone().into_iter().collect(),
                        delete: delete.clone(),
                    }))
                    .await
                    .map(|_| {
                        done.push(format!(
                            "config set {:?}, returned to default {:?}",
                            set.keys().collect::<Vec<_>>(),
                            delete
                        ))
                    });
            }
            result.map(|()| format!("topic {name}: {}", done.join("; ")))
        }
        TopicPlan::InSync | TopicPlan::Refused { .. } => Ok(String::new()),
    };
    let ready = match &outcome {
        Ok(_) => {
            let offline: Vec<usize> = state
                .topics
                .get(&name)
                .or(existing)
                .map(|t| {
                    t.partitions
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.leader.is_none())
                        .map(|(i, _)| i)
                        .collect()
                })
                .unwrap_or_default();
            if matches!(plan, TopicPlan::InSync) && !offline.is_empty() {
                refused(
                    "PartitionsOffline",
                    format!(
                        "partitions {offline:?} have no leader: no replica of theirs that may lead is alive"
                    ),
                )
            } else {
                ready_condition(&plan, generation, find(&status.conditions, "Ready"), now())
            }
        }
        Err(e) => refused(
            Reason::of(e).map_or("ControllerRefused", |r| r.as_str()),
            format!("the controller refused: {}", e.message()),
        ),
    };
    let (conditions, changed) = merge(&status.conditions, vec![ready.clone()]);
    match (&plan, &outcome) {
        (_, Err(_)) | (TopicPlan::Refused { .. }, _) if changed => {
            context
                .event(
                    topic,
                    true,
                    &ready.reason,
                    "Reconcile",
                    ready.message.clone(),
                )
                .await;
        }
        (TopicPlan::Create { .. } | TopicPlan::Update { .. }, Ok(done)) => {
            context
                .event(topic, false, &ready.reason, "Reconcile", done.clone())
                .await;
        }
        (_, _) if changed => {
            context
                .event(
                    topic,
                    false,
                    &ready.reason,
                    "Reconcile",
                    ready.message.clone(),
                )
                .await;
        }
        _ => {}
    }
    patch_status(
        &api,
        &resource,
        json!({ "conditions": conditions, "observedGeneration": generation }),
    )
    .await?;
    Ok(match (&plan, &outcome) {
        (_, Err(_)) => Action::requeue(Duration::from_secs(5)),
        _ => Action::requeue(context.settings.resync),
    })
}

/// Reassigns every partition of `name` to `factor` replicas (rebalance.rs's resize over the
/// live brokers); returns how many partitions move.
async fn change_replication_factor(
    controller: &ControllerService<crate::store::KubeStore>,
    name: &str,
    factor: i32,
) -> Result<usize, tonic::Status> {
    use weir_controller::rebalance::{Placed, resize};
    let state = controller.0.state().await;
    let brokers: Vec<(i32, Option<String>)> = state
        .alive_brokers()
        .filter(|b| !b.shutting_down)
        .map(|b| (b.id, b.rack.clone()))
        .collect();
    let placed = |t: &weir_controller::model::Topic| -> Vec<Placed> {
        t.partitions
            .iter()
            .enumerate()
            .map(|(i, p)| Placed {
                topic: t.name.clone(),
                partition: i32::try_from(i).unwrap_or(i32::MAX),
                replicas: p.target(),
            })
            .collect()
    };
    let all: Vec<Placed> = state.topics.values().flat_map(placed).collect();
    let topic = state
        .topics
        .get(name)
        .ok_or_else(|| Reason::UnknownTopic.status(format!("unknown topic {name}")))?;
    let moves = resize(
        &brokers,
        &placed(topic),
        &all,
        usize::try_from(factor).unwrap_or(0),
    )
    .map_err(|why| Reason::InvalidReplicationFactor.status(why))?;
    let results = controller
        .0
        .alter_reassignments(
            &moves
                .iter()
                .map(|m| v1::PartitionReassignment {
                    topic: m.topic.clone(),
                    partition: m.partition,
                    replicas: m.replicas.clone(),
                })
                .collect::<Vec<_>>(),
        )
        .await?;
    if let Some(refused) = results.iter().find(|r| !r.error.is_empty()) {
        return Err(Reason::InvalidReplicationFactor.status(refused.error.clone()));
    }
    Ok(moves.len())
}

async fn delete_topic(topic: &Topic, context: &Context) -> Result<Action, Error> {
    let namespace = topic.namespace().unwrap_or_default();
    let name = topic_name(topic);
    let controller = match cluster_controller(context, &namespace, &topic.spec.cluster).await? {
        Ok(controller) => controller,
        // No cluster, no topic to delete.
        Err(("ClusterNotFound", _)) => return Ok(Action::await_change()),
        Err((_, message)) => return Err(Error::Unavailable(message)),
    };
    if topic_config::is_internal(&name) {
        // Internal topics live as long as their cluster: the resource goes, the topic stays.
        return Ok(Action::await_change());
    }
    // Only the topic this resource holds (not one of the same name another resource holds).
    let id = topic.status.as_ref().and_then(|s| s.topic_id.clone());
    let holds = controller
        .0
        .state()
        .await
        .topics
        .get(&name)
        // Without an id this resource never held the topic (another resource does, or it
        // was never made): deleting it deletes nothing.
        .is_some_and(|t| id.as_ref() == Some(&t.id));
    if holds {
        match controller
            .delete_topic(Request::new(v1::DeleteTopicRequest { name: name.clone() }))
            .await
        {
            Ok(_) => {}
            Err(e) if Reason::of(&e) == Some(Reason::UnknownTopic) => {}
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "delete topic {name}: {}",
                    e.message()
                )));
            }
        }
        context
            .event(
                topic,
                false,
                "Deleted",
                "Delete",
                format!("deleted topic {name} and its data"),
            )
            .await;
    }
    Ok(Action::await_change())
}

// ---------------------------------------------------------------------------------------
// ConsumerGroup

async fn reconcile_group(
    group: Arc<ConsumerGroup>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    context.metrics.reconciled("ConsumerGroup");
    let namespace = group.namespace().unwrap_or_default();
    let resource = group.name_any();
    let api: Api<ConsumerGroup> = Api::namespaced(context.client.clone(), &namespace);
    let generation = group.metadata.generation;
    let status = group.status.clone().unwrap_or_default();
    let group_id = group
        .spec
        .group_id
        .clone()
        .unwrap_or_else(|| resource.clone());

    let unavailable = async |reason: &'static str, message: String| {
        report_failure(
            &context,
            &*group,
            &status.conditions,
            vec![condition("Ready", false, reason, message, generation)],
            "Reconcile",
            Some(generation),
        )
        .await?;
        Ok::<_, Error>(Action::requeue(Duration::from_secs(5)))
    };
    let controller = match cluster_controller(&context, &namespace, &group.spec.cluster).await? {
        Ok(controller) => controller,
        Err((reason, message)) => return unavailable(reason, message).await,
    };
    let state = controller.0.state().await;
    let cluster_key = key(&namespace, &group.spec.cluster);
    let Some(client) = context.client(&cluster_key, &state).await else {
        return unavailable(
            "NoBrokers",
            format!(
                "no broker of Cluster {:?} can be reached",
                group.spec.cluster
            ),
        )
        .await;
    };
    let description = match client.describe_group(&group_id).await {
        Ok(d) => d,
        Err(e) if e.reason() == Some(Reason::UnknownGroup) => v1::GroupDescription {
            group_id: group_id.clone(),
            state: "Unknown".into(),
            ..v1::GroupDescription::default()
        },
        Err(e) => {
            context.forget_client(&cluster_key).await;
            return unavailable("DescribeFailed", format!("describe group {group_id}: {e}")).await;
        }
    };
    let members = description.members.len();

    // The reset, when asked and allowed.
    let mut next = Vec::new();
    let mut applied = status.applied_reset_generation;
    // Removing `resetOffsets` forgets the reset applied, so that the same may be asked again.
    let mut applied_reset = group
        .spec
        .reset_offsets
        .as_ref()
        .and(status.applied_reset.clone());
    match reset_plan(&group.spec, members, status.applied_reset.as_ref()) {
        ResetPlan::Nothing => {}
        ResetPlan::Wait { reason, message } => {
            next.push(condition(
                "OffsetsReset",
                false,
                reason,
                message,
                generation,
            ));
        }
        ResetPlan::Invalid { message } => {
            next.push(condition(
                "OffsetsReset",
                false,
                "InvalidReset",
                message,
                generation,
            ));
        }
        ResetPlan::Apply(reset) => {
            let result = match reset.to {
                ResetTarget::Offsets => {
                    let offsets = reset
                        .offsets
                        .iter()
                        .filter_map(|(p, o)| Some((p.parse::<i32>().ok()?, *o)))
                        .collect();
                    client
                        .reset_group_partition_offsets(&group_id, &reset.topic, offsets)
                        .await
                }
                to => {
                    let spec = match to {
                        ResetTarget::Earliest => v1::OffsetSpec::Earliest,
                        ResetTarget::Latest => v1::OffsetSpec::Latest,
                        _ => v1::OffsetSpec::Timestamp,
                    };
                    client
                        .reset_group_offsets(
                            &group_id,
                            &reset.topic,
                            spec,
                            reset.timestamp.unwrap_or(0),
                            None,
                        )
                        .await
                }
            };
            match result {
                Ok(()) => {
                    applied = generation;
                    applied_reset = Some(reset.clone());
                    let message = format!(
                        "the offsets of {:?} were reset to {:?}",
                        reset.topic, reset.to
                    );
                    context
                        .event(&*group, false, "OffsetsReset", "Reset", message.clone())
                        .await;
                    next.push(condition(
                        "OffsetsReset",
                        true,
                        "Applied",
                        message,
                        generation,
                    ));
                }
                Err(e) => {
                    if e.is_retryable() {
                        context.forget_client(&cluster_key).await;
                    }
                    let message = format!("the reset of {:?} failed: {e}", reset.topic);
                    context
                        .event(&*group, true, "ResetFailed", "Reset", message.clone())
                        .await;
                    next.push(condition(
                        "OffsetsReset",
                        false,
                        "ResetFailed",
                        message,
                        generation,
                    ));
                }
            }
        }
    }
    // The offsets may just have moved: describe again for the lag.
    let description = if applied_reset != status.applied_reset {
        client
            .describe_group(&group_id)
            .await
            .unwrap_or(description)
    } else {
        description
    };

    // Lag per topic, and its drain time at the rate the committed offsets grew since the
    // last look.
    let mut per_topic: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for p in &description.partitions {
        if !group.spec.topics.is_empty() && !group.spec.topics.contains(&p.topic) {
            continue;
        }
        let entry = per_topic.entry(p.topic.clone()).or_default();
        entry.0 += p.lag.max(0);
        entry.1 += p.committed_offset.unwrap_or(0);
    }
    let observed = k8s_openapi::jiff::Timestamp::now();
    let elapsed = status
        .observed_time
        .as_ref()
        .map(|t| observed.duration_since(t.0).as_secs_f64())
        .filter(|s| *s > 0.0);
    let lag: Vec<TopicLag> = per_topic
        .into_iter()
        .map(|(topic, (messages, committed))| {
            let before = status.lag.iter().find(|l| l.topic == topic);
            let rate = match (before, elapsed) {
                (Some(before), Some(seconds)) => (committed - before.committed) as f64 / seconds,
                _ => 0.0,
            };
            TopicLag {
                approximate_seconds: approximate_seconds(messages, rate),
                topic,
                messages,
                committed,
            }
        })
        .collect();
    let total: i64 = lag.iter().map(|l| l.messages).sum();
    next.push(condition(
        "Ready",
        true,
        "Observed",
        format!(
            "group {group_id} is {} with {members} member(s)",
            description.state
        ),
        generation,
    ));
    let (conditions, _) = merge(&status.conditions, next);
    let next = crate::crd::ConsumerGroupStatus {
        state: Some(description.state.clone()),
        members: i32::try_from(members).unwrap_or(i32::MAX),
        total_lag: total,
        lag,
        applied_reset_generation: applied,
        applied_reset,
        observed_time: status.observed_time.clone(),
        conditions,
        observed_generation: generation,
    };
    // Every write is a watch event, and so another reconciliation at once: the lag alone is
    // written at most once per resync (the rate is measured over that span); anything else
    // at once.
    let lag_only = crate::crd::ConsumerGroupStatus {
        total_lag: status.total_lag,
        lag: status.lag.clone(),
        ..next.clone()
    } == status;
    let due = elapsed.is_none_or(|s| s >= context.settings.resync.as_secs_f64() * 0.9);
    if next != status && (!lag_only || due) {
        patch_status(
            &api,
            &resource,
            json!({
                "state": next.state,
                "members": next.members,
                "totalLag": next.total_lag,
                "lag": next.lag,
                "appliedResetGeneration": next.applied_reset_generation,
                "appliedReset": next.applied_reset,
                "observedTime": Time(observed),
                "conditions": next.conditions,
                "observedGeneration": next.observed_generation,
            }),
        )
        .await?;
    }
    Ok(Action::requeue(context.settings.resync))
}
