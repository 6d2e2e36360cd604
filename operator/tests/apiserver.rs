//! The CRDs against a real kube-apiserver and etcd on loopback: they are accepted, a Topic
//! as users write it is stored, and bad specs are refused by the schema with a message that
//! names the field.
//!
//! The API server comes from `support/apiserver.rs` (built and cached by `.ci/kube-apiserver`).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use weir_operator::crd::{
    Cluster, ClusterSpec, ConsumerGroup, RackSpec, StorageSpec, Topic, TopicSpec,
};

mod support {
    pub mod apiserver;
}
use support::apiserver::{DEADLINE, api_server, helm_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crds_are_served_and_bad_specs_are_refused_by_the_schema() {
    let Some((_server, client)) = api_server().await else {
        return;
    };

    // The CRDs as crdgen wrote them into crds/.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for (name, _) in weir_operator::crds().expect("crds") {
        let text = std::fs::read_to_string(root.join(&name)).expect("a generated CRD");
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("yaml");
        crds.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
    }
    // Served once established.
    let topics: Api<Topic> = Api::namespaced(client.clone(), "default");
    let topic = |name: &str, partitions: i32, replication_factor: i32| {
        Topic::new(
            name,
            TopicSpec {
                topic_name: None,
                cluster: "main".into(),
                partitions,
                replication_factor,
                config: [("retention.ms".to_string(), "86400000".to_string())].into(),
            },
        )
    };
    let deadline = Instant::now() + DEADLINE;
    let created = loop {
        match topics
            .create(&PostParams::default(), &topic("orders", 6, 3))
            .await
        {
            Ok(created) => break created,
            Err(e) => {
                assert!(Instant::now() < deadline, "Topic never served: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(created.spec.partitions, 6);
    assert_eq!(created.spec.config["retention.ms"], "86400000");

    // What a Cluster yields is accepted by the server as it is.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "default");
    let cluster = clusters
        .create(
            &PostParams::default(),
            &Cluster::new(
                "main",
                ClusterSpec {
                    brokers: 3,
                    image: None,
                    storage: StorageSpec {
                        size: "1Gi".into(),
                        storage_class_name: None,
                    },
                    resources: None,
                    rack: Some(RackSpec {
                        topology_key: "topology.kubernetes.io/zone".into(),
                    }),
                    topic_defaults: Default::default(),
                    broker_config: Default::default(),
                    ports: None,
                    auto_rebalance: None,
                },
            ),
        )
        .await
        .expect("a Cluster");
    let objects =
        weir_operator::objects::cluster_objects(&cluster, "weir-operator.default.svc:9190")
            .expect("objects");
    let post = PostParams::default();
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&post, &objects.config)
        .await
        .expect("the ConfigMap is accepted");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(&post, &objects.headless)
        .await
        .expect("the headless Service is accepted");
    services
        .create(&post, &objects.client)
        .await
        .expect("the client Service is accepted");
    let created = Api::<StatefulSet>::namespaced(client.clone(), "default")
        .create(&post, &objects.brokers)
        .await
        .expect("the StatefulSet is accepted");
    assert_eq!(created.spec.and_then(|s| s.replicas), Some(3));

    // The examples in manifests/ are valid as they are (in a namespace of their own).
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "examples"}}))
            .expect("a namespace");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&post, &namespace)
        .await
        .expect("namespace");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let read = |name: &str| std::fs::read_to_string(manifests.join(name)).expect("a manifest");
    for file in ["cluster.yaml", "cluster-production.yaml"] {
        let example: Cluster = serde_saphyr::from_str(&read(file)).expect(file);
        let mut example = example;
        example.metadata.name = Some(file.trim_end_matches(".yaml").to_string());
        Api::<Cluster>::namespaced(client.clone(), "examples")
            .create(&post, &example)
            .await
            .expect(file);
    }
    let example: Topic = serde_saphyr::from_str(&read("topic.yaml")).expect("topic.yaml");
    Api::<Topic>::namespaced(client.clone(), "examples")
        .create(&post, &example)
        .await
        .expect("topic.yaml is accepted");
    let example: ConsumerGroup =
        serde_saphyr::from_str(&read("consumergroup.yaml")).expect("consumergroup.yaml");
    Api::<ConsumerGroup>::namespaced(client.clone(), "examples")
        .create(&post, &example)
        .await
        .expect("consumergroup.yaml is accepted");

    for (bad, field) in [
        (topic("negative", -3, 3), "spec.partitions"),
        (topic("zero-replicas", 3, 0), "spec.replicationFactor"),
    ] {
        match topics.create(&PostParams::default(), &bad).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(status.message.contains(field), "{}", status.message);
            }
            other => panic!("{field}: not refused: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_holds_the_lease_and_another_takes_it_over_when_it_stops() {
    use k8s_openapi::api::coordination::v1::Lease;
    use weir_operator::lease::{Elector, Role};

    let Some((_server, client)) = api_server().await else {
        return;
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let duration = Duration::from_secs(2);
    let a = Elector::new(leases.clone(), "weir-operator", "operator-a", duration);
    let b = Elector::new(leases.clone(), "weir-operator", "operator-b", duration);
    assert_eq!(a.round().await.expect("a"), Role::Leading { epoch: 0 });
    // While a renews, b follows.
    for _ in 0..8 {
        assert_eq!(
            b.round().await.expect("b"),
            Role::Following {
                holder: Some("operator-a".into())
            }
        );
        assert_eq!(a.round().await.expect("a"), Role::Leading { epoch: 0 });
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // a stops (killed): b takes over within the lease duration and its epoch is higher.
    let stopped = Instant::now();
    let deadline = stopped + DEADLINE;
    let epoch = loop {
        match b.round().await.expect("b") {
            Role::Leading { epoch } => break epoch,
            Role::Following { .. } => {
                assert!(Instant::now() < deadline, "b never took over");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let handover = stopped.elapsed();
    println!("lease handover: {handover:?} with a {duration:?} lease");
    assert_eq!(epoch, 1);
    assert!(
        handover >= duration,
        "taken over before the lease ran out: {handover:?}"
    );
    // a comes back: it follows b.
    assert_eq!(
        a.round().await.expect("a"),
        Role::Following {
            holder: Some("operator-b".into())
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_into_a_real_api_server() {
    let Some(helm) = helm_binary() else {
        return;
    };
    let Some((server, client)) = api_server().await else {
        return;
    };
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/weir");
    let output = std::process::Command::new(&helm)
        .args(["install", "weir"])
        .arg(&chart)
        .args([
            "--namespace",
            "weir-system",
            "--create-namespace",
            "--set",
            "cluster.create=true",
            "--timeout",
            "60s",
        ])
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .output()
        .expect("run helm");
    assert!(
        output.status.success(),
        "helm install failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let notes = String::from_utf8_lossy(&output.stdout);
    assert!(notes.contains("weir-operator"), "{notes}");

    // The CRDs (from the chart's crds/), and the operator's objects.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "clusters.weir.dev",
        "topics.weir.dev",
        "consumergroups.weir.dev",
    ] {
        assert!(crds.get_opt(name).await.expect("get").is_some(), "{name}");
    }
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "weir-system");
    let deployment = deployments.get("weir").await.expect("the Deployment");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(
        pod.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let env = pod.containers[0].env.clone().unwrap_or_default();
    assert!(
        env.iter().any(|e| e.name == "WEIR_CONTROLLER_ADDRESS"
            && e.value.as_deref() == Some("weir.weir-system.svc:9100")),
        "{env:?}"
    );
    let services: Api<Service> = Api::namespaced(client.clone(), "weir-system");
    assert!(services.get_opt("weir").await.expect("get").is_some());
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    let role = roles.get("weir").await.expect("the ClusterRole");
    // Least privilege: no wildcards; Secrets only read and made (each Cluster's own secret,
    // never listed, changed or deleted); Nodes only read; Pods read, listed and deleted (the
    // operator's rolls), never made or changed; claims deleted only (a removed broker's).
    for rule in role.rules.unwrap_or_default() {
        let resources = rule.resources.unwrap_or_default();
        assert!(
            !resources.iter().any(|r| r == "*") && !rule.verbs.iter().any(|v| v == "*"),
            "{resources:?}"
        );
        if resources.iter().any(|r| r == "secrets") {
            assert_eq!(resources, ["secrets"]);
            assert_eq!(rule.verbs, ["get", "create"], "{resources:?}");
        }
        if resources.iter().any(|r| r == "nodes") {
            assert_eq!(rule.verbs, ["get"], "{resources:?}");
        }
        if resources
            .iter()
            .any(|r| r == "pods" || r == "persistentvolumeclaims")
        {
            assert_eq!(rule.verbs, ["get", "list", "delete"], "{resources:?}");
        }
    }
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "weir-system");
    let cluster = clusters.get("main").await.expect("the Cluster from values");
    assert_eq!(cluster.spec.brokers, 3);
}
