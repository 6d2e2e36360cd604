//! What a `Cluster` yields in Kubernetes, as a pure function of its spec: the broker config
//! (a ConfigMap), a headless Service for the brokers' own DNS names, a Service for clients,
//! the StatefulSet (a volume per broker, readiness from `/readyz`, brokers spread over nodes
//! and zones). The reconciler (to come) applies these, with a PodDisruptionBudget in whichever
//! `policy` version the server serves; tests check them here and against a real API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource, SecurityContext,
    Service, ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::crd::Cluster;

/// The broker image when a Cluster names none.
pub const DEFAULT_IMAGE: &str = "weir/weir-broker:0.1.0";
pub const DEFAULT_GRPC_PORT: i32 = 9192;
pub const DEFAULT_HTTP_PORT: i32 = 9193;
/// Kafka's own port, where Kafka clients look first.
pub const DEFAULT_KAFKA_PORT: i32 = 9092;
/// Where a broker keeps its data inside its pod.
const DATA_DIR: &str = "/var/lib/weir";
/// The user and group brokers run as (the image's `weir`, as in docker/broker.Dockerfile).
pub const BROKER_UID: i64 = 65532;
/// The pod template annotation holding a hash of the broker config: a change of the config
/// alone changes the template, so brokers restart with it.
pub const CONFIG_HASH_ANNOTATION: &str = "weir.dev/config-hash";
/// Where the cluster secret is mounted in a broker's pod, and the file in it.
const SECRET_DIR: &str = "/etc/weir-secret";
/// The key of the cluster secret in its Kubernetes Secret (and the file it is mounted as).
pub const SECRET_KEY: &str = "cluster-secret";

/// The ConfigMap holding a cluster's broker config.
fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-broker-config")
}

/// The Secret holding a cluster's shared secret, which its brokers present to the controller
/// and to each other.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-cluster-secret")
}

/// Everything a Cluster yields.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterObjects {
    pub config: ConfigMap,
    pub headless: Service,
    pub client: Service,
    pub brokers: StatefulSet,
}

/// Why a Cluster cannot be turned into objects (reported as a condition).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the Cluster has no name or namespace yet")]
    Unnamed,
    #[error("a broker config key {0:?} is set by the operator and cannot be overridden")]
    Reserved(String),
}

/// The objects of `cluster`, whose brokers register with the controller at `controller`
/// (`host:port`).
///
/// # Errors
/// `Unnamed`, or `Reserved` for a broker config key the operator owns.
pub fn cluster_objects(cluster: &Cluster, controller: &str) -> Result<ClusterObjects, SpecError> {
    let (name, namespace) = named(cluster)?;
    let spec = &cluster.spec;
    let (grpc, http, kafka) = spec.ports.as_ref().map_or(
        (DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, DEFAULT_KAFKA_PORT),
        |p| (p.grpc, p.http, p.kafka.unwrap_or(DEFAULT_KAFKA_PORT)),
    );
    for key in spec.broker_config.keys() {
        if RESERVED.contains(&key.as_str()) {
            return Err(SpecError::Reserved(key.clone()));
        }
    }
    let labels = broker_labels(&name);
    let owner = owner_reference(cluster, &name);
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    let headless_name = format!("{name}-brokers");
    let config_name = config_map_name(&name);

    let toml = broker_toml(
        spec,
        controller,
        &format!("{namespace}/{name}"),
        [grpc, http, kafka],
    );
    let config_hash = format!("{:08x}", crc32c::crc32c(toml.as_bytes()));
    let config = ConfigMap {
        metadata: meta(config_name.clone()),
        data: Some(BTreeMap::from([("broker.toml".to_string(), toml)])),
        ..ConfigMap::default()
    };
    let ports = vec![
        ServicePort {
            name: Some("grpc".into()),
            port: grpc,
            target_port: Some(IntOrString::String("grpc".into())),
            // Server-side apply keys ports by port and protocol: name it.
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("kafka".into()),
            port: kafka,
            target_port: Some(IntOrString::String("kafka".into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("http".into()),
            port: http,
            target_port: Some(IntOrString::String("http".into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        },
    ];
    let headless = Service {
        metadata: meta(headless_name.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Brokers find each other (and register) before they are ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(labels.clone()),
            ports: Some(ports.clone()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let client = Service {
        metadata: meta(name.clone()),
        spec: Some(ServiceSpec {
            selector: Some(labels.clone()),
            // Clients' ports: gRPC and Kafka.
            ports: Some(ports[..2].to_vec()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let brokers = StatefulSet {
        metadata: meta(name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.brokers),
            service_name: Some(headless_name.clone()),
            // Brokers start together; the controller waits for them.
            pod_management_policy: Some("Parallel".into()),
            // The operator rolls brokers itself, one at a time and only when no partition
            // would fall below its minimum ISR (roll.rs); the StatefulSet only remakes a
            // Pod the operator deleted, at the current revision.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(broker_pod(
                    spec,
                    &labels,
                    &name,
                    &headless_name,
                    &namespace,
                    [grpc, http, kafka],
                )),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(spec.storage.size.clone()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    Ok(ClusterObjects {
        config,
        headless,
        client,
        brokers,
    })
}

/// The Cluster's name and namespace, or `Unnamed`.
fn named(cluster: &Cluster) -> Result<(String, String), SpecError> {
    match (&cluster.metadata.name, &cluster.metadata.namespace) {
        (Some(name), Some(namespace)) => Ok((name.clone(), namespace.clone())),
        _ => Err(SpecError::Unnamed),
    }
}

/// Broker config keys the operator sets itself.
const RESERVED: [&str; 10] = [
    "cluster",
    "cluster_secret_file",
    "data_dir",
    "listen",
    "http_listen",
    "kafka_listen",
    "kafka_advertised_address",
    "broker_id",
    "advertised_address",
    "controller",
];

/// The PodDisruptionBudget of a Cluster's brokers, in `api_version` (`policy/v1`, or
/// `policy/v1beta1` on servers older than 1.21): one broker down at a time.
///
/// # Errors
/// `Unnamed`.
pub fn disruption_budget(
    cluster: &Cluster,
    api_version: &str,
) -> Result<serde_json::Value, SpecError> {
    let (name, namespace) = named(cluster)?;
    Ok(serde_json::json!({
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": broker_labels(&name),
            "ownerReferences": [owner_reference(cluster, &name)],
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": broker_labels(&name) },
        },
    }))
}

/// The labels of a Cluster's brokers and of everything made for them.
pub fn broker_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "weir-broker".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "weir-operator".to_string(),
        ),
    ])
}

fn owner_reference(cluster: &Cluster, name: &str) -> OwnerReference {
    OwnerReference {
        api_version: Cluster::api_version(&()).into_owned(),
        kind: Cluster::kind(&()).into_owned(),
        name: name.to_string(),
        uid: cluster.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The broker's TOML config: what every broker of the cluster shares. The id and the
/// advertised address come from each pod's name at start.
fn broker_toml(
    spec: &crate::crd::ClusterSpec,
    controller: &str,
    cluster: &str,
    [grpc, http, kafka]: [i32; 3],
) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut lines = vec![
        format!("data_dir = {}", quote(DATA_DIR)),
        format!("listen = {}", quote(&format!("0.0.0.0:{grpc}"))),
        format!("http_listen = {}", quote(&format!("0.0.0.0:{http}"))),
        format!("kafka_listen = {}", quote(&format!("0.0.0.0:{kafka}"))),
        format!("controller = {}", quote(controller)),
        format!("cluster = {}", quote(cluster)),
        format!(
            "cluster_secret_file = {}",
            quote(&format!("{SECRET_DIR}/{SECRET_KEY}"))
        ),
    ];
    // Numbers and booleans as themselves, everything else (sizes, durations) as strings.
    let literal = |v: &str| {
        if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
            v.to_string()
        } else {
            quote(v)
        }
    };
    for (key, value) in &spec.broker_config {
        lines.push(format!("{key} = {}", literal(value)));
    }
    if !spec.topic_defaults.is_empty() {
        lines.push(String::new());
        lines.push("[topic_defaults]".into());
        for (key, value) in &spec.topic_defaults {
            lines.push(format!("{} = {}", quote(key), quote(value)));
        }
    }
    lines.join("\n") + "\n"
}

fn broker_pod(
    spec: &crate::crd::ClusterSpec,
    labels: &BTreeMap<String, String>,
    cluster_name: &str,
    headless_name: &str,
    namespace: &str,
    [grpc, http, kafka]: [i32; 3],
) -> PodSpec {
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.into(),
            ..ObjectFieldSelector::default()
        }),
        ..EnvVarSource::default()
    };
    let spread = |key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(labels.clone()),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    };
    let mut spreads = vec![spread("kubernetes.io/hostname")];
    if let Some(rack) = &spec.rack {
        spreads.push(spread(&rack.topology_key));
    }
    PodSpec {
        containers: vec![Container {
            name: "broker".into(),
            image: Some(spec.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
            // The broker id is the pod's ordinal; its address the pod's stable DNS name.
            command: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec![format!(
                "exec weir-broker --config /etc/weir/broker.toml --id \"${{POD_NAME##*-}}\" \
                 --advertised-address \"$POD_NAME.{headless_name}.{namespace}.svc:{grpc}\" \
                 --kafka-advertised-address \"$POD_NAME.{headless_name}.{namespace}.svc:{kafka}\""
            )]),
            env: Some(vec![EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(field("metadata.name")),
                ..EnvVar::default()
            }]),
            ports: Some(vec![
                ContainerPort {
                    name: Some("grpc".into()),
                    container_port: grpc,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some("http".into()),
                    container_port: http,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some("kafka".into()),
                    container_port: kafka,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                },
            ]),
            readiness_probe: Some(probe("/readyz", 5)),
            liveness_probe: Some(Probe {
                failure_threshold: Some(6),
                ..probe("/healthz", 10)
            }),
            resources: spec.resources.clone(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "data".into(),
                    mount_path: DATA_DIR.into(),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: "config".into(),
                    mount_path: "/etc/weir".into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: "secret".into(),
                    mount_path: SECRET_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            ]),
            security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }],
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map_name(cluster_name),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "secret".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret_name(cluster_name)),
                    default_mode: Some(0o400),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        topology_spread_constraints: Some(spreads),
        // The image's non-root user; a fresh volume is made writable for its group.
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(BROKER_UID),
            run_as_group: Some(BROKER_UID),
            fs_group: Some(BROKER_UID),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            ..PodSecurityContext::default()
        }),
        // SIGTERM closes every log cleanly; give it the broker's own shutdown timeout.
        termination_grace_period_seconds: Some(60),
        ..PodSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClusterSpec, RackSpec, StorageSpec};

    fn cluster(spec: ClusterSpec) -> Cluster {
        let mut cluster = Cluster::new("main", spec);
        cluster.metadata.namespace = Some("streams".into());
        cluster.metadata.uid = Some("uid-1".into());
        cluster
    }

    fn spec() -> ClusterSpec {
        ClusterSpec {
            brokers: 3,
            image: None,
            storage: StorageSpec {
                size: "10Gi".into(),
                storage_class_name: Some("fast".into()),
            },
            resources: None,
            rack: Some(RackSpec {
                topology_key: "topology.kubernetes.io/zone".into(),
            }),
            topic_defaults: BTreeMap::from([("retention.ms".into(), "86400000".into())]),
            broker_config: BTreeMap::new(),
            ports: None,
            auto_rebalance: None,
        }
    }

    #[test]
    fn a_cluster_yields_its_brokers_services_and_config() {
        let objects =
            cluster_objects(&cluster(spec()), "weir-operator.streams.svc:9190").expect("objects");
        let set = objects.brokers.spec.as_ref().expect("spec");
        assert_eq!(set.replicas, Some(3));
        assert_eq!(set.service_name.as_deref(), Some("main-brokers"));
        let claim = &set.volume_claim_templates.as_ref().expect("claims")[0];
        let claim_spec = claim.spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(|r| r["storage"].0.clone()),
            Some("10Gi".to_string())
        );
        let pod = set.template.spec.as_ref().expect("pod");
        let broker = &pod.containers[0];
        assert_eq!(broker.image.as_deref(), Some(DEFAULT_IMAGE));
        let readiness = broker
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref());
        assert_eq!(readiness.and_then(|h| h.path.as_deref()), Some("/readyz"));
        let command = broker.args.as_ref().expect("args")[0].clone();
        assert!(command.contains("--id \"${POD_NAME##*-}\""), "{command}");
        assert!(
            command.contains("$POD_NAME.main-brokers.streams.svc:9192")
                && command.contains(
                    "--kafka-advertised-address \"$POD_NAME.main-brokers.streams.svc:9092\""
                ),
            "{command}"
        );
        let spreads: Vec<&str> = pod
            .topology_spread_constraints
            .as_ref()
            .expect("spread")
            .iter()
            .map(|c| c.topology_key.as_str())
            .collect();
        assert_eq!(
            spreads,
            ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        );
        let headless = objects.headless.spec.as_ref().expect("spec");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        assert_eq!(objects.client.metadata.name.as_deref(), Some("main"));
        let toml = &objects.config.data.as_ref().expect("data")["broker.toml"];
        assert!(
            toml.contains("controller = \"weir-operator.streams.svc:9190\""),
            "{toml}"
        );
        assert!(toml.contains("\"retention.ms\" = \"86400000\""), "{toml}");
        // Everything belongs to the Cluster, so deleting it deletes them.
        for owners in [
            &objects.config.metadata.owner_references,
            &objects.headless.metadata.owner_references,
            &objects.client.metadata.owner_references,
            &objects.brokers.metadata.owner_references,
        ] {
            let owner = &owners.as_ref().expect("owner")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str()),
                ("Cluster", "uid-1")
            );
        }
    }

    #[test]
    fn brokers_run_as_the_image_user_and_own_their_volume() {
        let objects = cluster_objects(&cluster(spec()), "c:1").expect("objects");
        let pod = objects
            .brokers
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let context = pod.security_context.expect("pod security context");
        assert_eq!(context.run_as_user, Some(BROKER_UID));
        assert_eq!(context.run_as_group, Some(BROKER_UID));
        // Without fsGroup a fresh volume is root's and the broker cannot write it.
        assert_eq!(context.fs_group, Some(BROKER_UID));
        assert_eq!(context.run_as_non_root, Some(true));
    }

    #[test]
    fn a_config_change_alone_changes_the_pod_template() {
        let hash = |spec: ClusterSpec| {
            let objects = cluster_objects(&cluster(spec), "c:1").expect("objects");
            objects
                .brokers
                .spec
                .expect("spec")
                .template
                .metadata
                .expect("meta")
                .annotations
                .expect("annotations")[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let before = hash(spec());
        assert_eq!(hash(spec()), before, "the hash is stable");
        let mut changed = spec();
        changed
            .topic_defaults
            .insert("retention.ms".into(), "1000".into());
        assert_ne!(hash(changed), before);
        let mut changed = spec();
        changed
            .broker_config
            .insert("default_partitions".into(), "3".into());
        assert_ne!(hash(changed), before);
    }

    #[test]
    fn the_operator_keeps_the_keys_it_sets() {
        let mut spec = spec();
        spec.broker_config
            .insert("controller".into(), "elsewhere:1".into());
        assert_eq!(
            cluster_objects(&cluster(spec), "c:1"),
            Err(SpecError::Reserved("controller".into()))
        );
    }

    #[test]
    fn the_broker_config_parses_as_toml_the_broker_reads() {
        let mut spec = spec();
        spec.broker_config
            .insert("default_partitions".into(), "6".into());
        spec.broker_config
            .insert("shutdown_timeout".into(), "30s".into());
        let objects = cluster_objects(&cluster(spec), "c:1").expect("objects");
        let text = &objects.config.data.as_ref().expect("data")["broker.toml"];
        let parsed: toml::Table = toml::from_str(text).expect("valid TOML");
        assert_eq!(parsed["default_partitions"].as_integer(), Some(6));
        assert_eq!(parsed["data_dir"].as_str(), Some("/var/lib/weir"));
        assert_eq!(
            parsed["topic_defaults"]["retention.ms"].as_str(),
            Some("86400000")
        );
    }
}
