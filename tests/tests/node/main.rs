//! The operator end to end on a real node (kubelet, containerd, runc, kube-proxy; Pods from
//! the images `.ci/images` builds from the release binaries), as a user runs it: `helm
//! install`, the manifests in `manifests/` applied as they are, brokers in Pods writing their
//! own PersistentVolumes, produce and consume inside the cluster, and the day-2 events users
//! meet (a config change, a Pod deleted by hand, the Cluster deleted, `helm uninstall`).
//!
//! Needs the node `tests/node/run` brings up (it sets KUBECONFIG, WEIR_NODE_NAME and
//! WEIR_HELM); ignored by a plain `cargo test`.

mod kube;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::Node;

const NS: &str = "default";
/// Brokers become ready within this; a pull-free Pod starts in seconds here.
const START: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn manifest(name: &str) -> String {
    std::fs::read_to_string(repo().join("manifests").join(name)).expect("a manifest")
}

/// A default StorageClass of pre-created local volumes (1.20 has no local provisioner), and
/// `count` PersistentVolumes on this node under its run directory.
fn local_volumes(node: &Node, count: usize) {
    let mut yaml = String::from(
        "apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: false
",
    );
    for i in 0..count {
        let path = node.dir.join("volumes").join(format!("pv-{i}"));
        std::fs::create_dir_all(&path).expect("a volume directory");
        yaml.push_str(&format!(
            "---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: local-{i}
spec:
  capacity: {{storage: 2Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {{path: {}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{}]}}
",
            path.display(),
            node.name
        ));
    }
    node.apply(NS, &yaml);
}

/// The UIDs of the broker Pods that are ready, by name.
fn ready_brokers(node: &Node) -> Vec<(String, String)> {
    let text = node.get(
        NS,
        "pods",
        r#"{range .items[?(@.metadata.labels.app\.kubernetes\.io/name=="weir-broker")]}{.metadata.name} {.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    );
    let mut ready: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (name, uid, status) = (parts.next()?, parts.next()?, parts.next()?);
            (status == "True").then(|| (name.to_string(), uid.to_string()))
        })
        .collect();
    ready.sort();
    ready
}

/// `(replicas, in sync)` over every partition of a Topic resource's status.
fn topic_sync(node: &Node, topic: &str) -> Option<(usize, usize)> {
    let text = node.get(NS, &format!("topic/{topic}"), "{.status.inSyncReplicas}");
    let (isr, all) = text.split_once('/')?;
    Some((all.parse().ok()?, isr.parse().ok()?))
}

fn fully_in_sync(node: &Node, topic: &str, replicas: usize) -> bool {
    topic_sync(node, topic).is_some_and(|(all, isr)| all == replicas && isr == all)
}

/// Runs the `weir` CLI inside a broker Pod (the broker image carries it), against the
/// cluster's client Service.
fn weir(node: &Node, pod: &str, args: &[&str], input: &str) -> String {
    let mut full = vec![
        "exec",
        "-i",
        "-n",
        NS,
        pod,
        "--",
        "weir",
        "--bootstrap",
        "main:9192",
    ];
    full.extend_from_slice(args);
    node.ok_in(&full, input)
}

#[test]
#[ignore = "needs a real node: tests/node/run"]
fn the_operator_runs_weir_in_real_pods() {
    let node = Node::from_env();
    let started = Instant::now();
    let chart = repo().join("charts/weir");

    // The operator, as a user installs it; the images were imported, never pulled.
    node.helm(&[
        "install",
        "weir",
        &chart.display().to_string(),
        "--namespace",
        "weir-system",
        "--create-namespace",
        "--set",
        "image.pullPolicy=Never",
    ]);
    node.wait(
        "an operator Pod holds the Lease and is ready",
        START,
        || {
            let ready = node.get(
                "weir-system",
                "pods",
                r#"{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
            );
            ready.lines().any(|l| l == "True").then_some(())
        },
    );

    // The quickstart Cluster as it is, on fresh local volumes (root's until the Pod's
    // fsGroup makes them the broker's).
    local_volumes(&node, 4);
    node.apply(NS, &manifest("cluster.yaml"));
    let brokers = node.wait("three broker Pods ready", START, || {
        let ready = ready_brokers(&node);
        (ready.len() == 3).then_some(ready)
    });
    node.wait("the Cluster Ready with 3 brokers registered", START, || {
        let status = node.get(
            NS,
            "cluster/main",
            r#"{.status.registeredBrokers} {.status.conditions[?(@.type=="Ready")].status}"#,
        );
        (status == "3 True").then_some(())
    });
    let cluster_ready = started.elapsed();
    // Finding: a fresh volume is root's; fsGroup gives it to the broker's group.
    for i in 0..3 {
        let claimed = node.get(NS, &format!("pvc/data-main-{i}"), "{.spec.volumeName}");
        let dir = node
            .dir
            .join("volumes")
            .join(claimed.replace("local-", "pv-"));
        let gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&dir).expect("volume"));
        assert_eq!(
            gid,
            65532,
            "{} belongs to the broker's group",
            dir.display()
        );
    }

    // A Topic and a ConsumerGroup from manifests/, as they are.
    node.apply(NS, &manifest("topic.yaml"));
    node.apply(NS, &manifest("consumergroup.yaml"));
    node.wait("orders: 6 partitions, every replica in sync", START, || {
        fully_in_sync(&node, "orders", 18).then_some(())
    });
    let leaders = node.get(NS, "topic/orders", "{.status.leaders}");
    assert!(
        !leaders.contains('-'),
        "every partition has a leader: {leaders}"
    );

    // Produce and consume through the client Service, from inside the cluster.
    let records: String = (0..1000).map(|i| format!("order-{i}\n")).collect();
    weir(
        &node,
        &brokers[0].0,
        &["produce", "orders", "--acks", "all"],
        &records,
    );
    let consumed = weir(
        &node,
        &brokers[1].0,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "1000",
            "--timeout",
            "60s",
        ],
        "",
    );
    let mut seen: Vec<&str> = consumed.lines().collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 1000, "every record consumed once");
    // The group's lag in `kubectl get consumergroups`.
    node.wait("the billing group's lag is 0 in its status", START, || {
        let lag = node.get(NS, "consumergroup/billing", "{.status.totalLag}");
        (lag == "0").then_some(())
    });
    // Kafka's protocol on the brokers' Kafka port, through the Service and the brokers'
    // advertised DNS names.
    let leader0 = node.get(NS, "topic/orders", "{.status.partitions[0].leader}");
    let bench = weir(
        &node,
        &brokers[2].0,
        &[
            "bench",
            "kafka",
            "produce",
            "orders",
            "--kafka",
            &format!("main-{leader0}.main-brokers.default.svc:9092"),
            "--records",
            "20000",
        ],
        "",
    );
    assert!(bench.contains("records/s"), "{bench}");

    // Finding: a change of the broker config alone restarts the brokers with it.
    let before = ready_brokers(&node);
    node.ok(&[
        "patch",
        "-n",
        NS,
        "cluster/main",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"topicDefaults":{"retention.ms":"86400000"}}}"#,
    ]);
    node.wait("every broker restarted with the new config", START, || {
        let now = ready_brokers(&node);
        (now.len() == 3
            && now
                .iter()
                .all(|(_, uid)| !before.iter().any(|(_, b)| b == uid)))
        .then_some(())
    });
    node.wait("orders in sync after the config roll", START, || {
        fully_in_sync(&node, "orders", 18).then_some(())
    });
    let config = node.get(NS, "configmap/main-broker-config", "{.data.broker\\.toml}");
    assert!(
        config.contains("\"retention.ms\" = \"86400000\""),
        "{config}"
    );

    // A Pod deleted by hand comes back on its volume and rejoins every ISR.
    let replaced = ready_brokers(&node)
        .into_iter()
        .find(|(name, _)| name == "main-1")
        .map(|(_, uid)| uid)
        .expect("main-1 ready");
    let deleted_at = Instant::now();
    node.ok(&["delete", "pod", "-n", NS, "main-1", "--wait=false"]);
    node.wait("main-1 replaced and ready", START, || {
        ready_brokers(&node)
            .iter()
            .any(|(name, uid)| name == "main-1" && *uid != replaced)
            .then_some(())
    });
    node.wait("main-1 back in every ISR", START, || {
        fully_in_sync(&node, "orders", 18).then_some(())
    });
    let rejoined = deleted_at.elapsed();
    let consumed = weir(
        &node,
        &brokers[0].0,
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--from-beginning",
            "--timeout",
            "10s",
        ],
        "",
    );
    assert!(!consumed.is_empty(), "partition 0 still serves its records");

    // Deleting the Cluster takes its Topics with it, `__consumer_offsets`' too.
    node.ok(&["delete", "topic", "-n", NS, "orders", "--timeout=120s"]);
    node.ok(&[
        "delete",
        "consumergroup",
        "-n",
        NS,
        "billing",
        "--timeout=120s",
    ]);
    node.ok(&["delete", "cluster", "-n", NS, "main", "--timeout=120s"]);
    node.wait("no Topic outlives its Cluster", START, || {
        let left = node.get(NS, "topics", "{.items[*].metadata.name}");
        left.trim().is_empty().then_some(())
    });
    node.wait("the brokers are gone with their Cluster", START, || {
        ready_brokers(&node).is_empty().then_some(())
    });
    node.helm(&["uninstall", "weir", "--namespace", "weir-system"]);
    let leftovers = node.get(
        "--all-namespaces",
        "topics,clusters,consumergroups",
        "{.items[*].metadata.name}",
    );
    assert!(leftovers.trim().is_empty(), "left behind: {leftovers}");

    eprintln!(
        "real node: cluster ready in {:.1}s; a deleted broker Pod back in every ISR in {:.1}s; whole test {:.1}s",
        cluster_ready.as_secs_f64(),
        rejoined.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
