//! The operator end to end on a real node (kubelet, containerd, runc, kube-proxy; Pods from
//! the images `.ci/images` builds from the release binaries), as a user runs it: `helm
//! install`, the manifests in `manifests/` applied as they are, brokers in Pods writing their
//! own PersistentVolumes, produce and consume inside the cluster, and the day-2 events users
//! meet (a config change, a Pod deleted by hand, the Cluster deleted, `helm uninstall`).
//!
//! Needs the node `tests/node/run` brings up (it sets KUBECONFIG, WEIR_NODE_NAME and
//! WEIR_HELM); ignored by a plain `cargo test`.

mod kube;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube::Node;

const NS: &str = "default";
/// Brokers become ready within this; a pull-free Pod starts in seconds here.
const START: Duration = Duration::from_secs(180);
/// A roll of three brokers, each waiting for the one before to be back in every ISR.
const ROLL: Duration = Duration::from_secs(420);

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
    local_volumes(&node, 5);
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

    // A change of the broker config alone rolls the brokers, one at a time and only when
    // safe, while an application produces with acks=all and a group consumes.
    let roll = roll_under_load(&node, &brokers);
    let config = node.get(NS, "configmap/main-broker-config", "{.data.broker\\.toml}");
    assert!(
        config.contains("\"retention.ms\" = \"86400000\""),
        "{config}"
    );
    // Leadership returns to the preferred replicas after the roll.
    node.wait(
        "every partition led by its preferred replica again",
        START,
        || {
            let leaders = node.get(NS, "topic/orders", "{.status.partitions[*].leader}");
            let preferred = node.get(NS, "topic/orders", "{.status.partitions[*].replicas[0]}");
            (!leaders.is_empty() && leaders == preferred).then_some(())
        },
    );

    // Scale 3 -> 4 -> 3 under the same load: the new broker gets its share, the removed
    // one is drained first and its claim released.
    let scaled = scale_under_load(&node);

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
    node.wait(
        "no Topic the controller made outlives its Cluster",
        START,
        || {
            let left = node.get(
                NS,
                "topics",
                r#"{.items[?(@.metadata.labels.weir\.dev/cluster)].metadata.name}"#,
            );
            left.trim().is_empty().then_some(())
        },
    );
    // The user's own Topics stay (they are the user's), and still go when deleted, their
    // Cluster gone: the finalizer does not wait for a controller that is no more.
    node.ok(&[
        "delete",
        "topic",
        "-n",
        NS,
        "rolling",
        "scaling",
        "--timeout=120s",
    ]);
    let left = node.get(NS, "topics", "{.items[*].metadata.name}");
    assert!(left.trim().is_empty(), "Topics left: {left}");
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
        "real node: cluster ready in {:.1}s; roll of 3 brokers under load in {:.1}s ({} records acknowledged, {} produce errors, {} consumed, smallest ISR seen {}); scale 3->4 balanced in {:.1}s, 4->3 drained and shrunk in {:.1}s ({} records acknowledged, {} produce errors, {} consumed, replicas per broker {:?} then {:?}); a deleted broker Pod back in every ISR in {:.1}s; whole test {:.1}s",
        cluster_ready.as_secs_f64(),
        roll.took.as_secs_f64(),
        roll.acknowledged,
        roll.errors,
        roll.consumed,
        roll.smallest_isr,
        scaled.up.as_secs_f64(),
        scaled.down.as_secs_f64(),
        scaled.acknowledged,
        scaled.errors,
        scaled.consumed,
        scaled.spread_up,
        scaled.spread_down,
        rejoined.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// What scaling under load measured.
struct Scaled {
    up: Duration,
    down: Duration,
    acknowledged: usize,
    errors: usize,
    consumed: usize,
    spread_up: Vec<usize>,
    spread_down: Vec<usize>,
}

/// Every partition of every Topic: `(replicas, leader, adding)` as their statuses say.
fn placements(node: &Node) -> Vec<(Vec<i32>, i32, bool)> {
    let text = node.get(
        NS,
        "topics",
        r#"{range .items[*].status.partitions[*]}{.replicas}|{.leader}|{.adding}{"\n"}{end}"#,
    );
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split('|');
            let replicas: Vec<i32> = serde_json::from_str(parts.next()?).ok()?;
            let leader = parts.next()?.parse().unwrap_or(-1);
            let adding = parts
                .next()
                .is_some_and(|a| !a.trim().is_empty() && a != "[]");
            Some((replicas, leader, adding))
        })
        .collect()
}

/// Replicas and leaders per broker `0..brokers`, once no move is under way.
fn spread(node: &Node, brokers: i32) -> Option<(Vec<usize>, Vec<usize>)> {
    let placed = placements(node);
    if placed.is_empty() || placed.iter().any(|(_, _, adding)| *adding) {
        return None;
    }
    let mut replicas = vec![0; usize::try_from(brokers).ok()?];
    let mut leaders = vec![0; replicas.len()];
    for (list, leader, _) in &placed {
        for r in list {
            *replicas.get_mut(usize::try_from(*r).ok()?)? += 1;
        }
        *leaders.get_mut(usize::try_from(*leader).ok()?)? += 1;
    }
    Some((replicas, leaders))
}

/// Counts within `slack` of each other.
fn even(counts: &[usize], slack: usize) -> bool {
    counts
        .iter()
        .max()
        .zip(counts.iter().min())
        .is_some_and(|(max, min)| max - min <= slack)
}

fn scale_to(node: &Node, brokers: i32) {
    patch_cluster(node, &format!(r#"{{"spec":{{"brokers":{brokers}}}}}"#));
}

/// A JSON merge patch of the Cluster `main`.
fn patch_cluster(node: &Node, patch: &str) {
    node.ok(&[
        "patch",
        "-n",
        NS,
        "cluster/main",
        "--type",
        "merge",
        "-p",
        patch,
    ]);
}

fn scale_under_load(node: &Node) -> Scaled {
    node.apply(
        NS,
        "apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: scaling}
spec:
  cluster: main
  partitions: 6
  replicationFactor: 3
  config: {min.insync.replicas: \"2\"}
",
    );
    node.wait("the scaling topic in sync", START, || {
        fully_in_sync(node, "scaling", 18).then_some(())
    });
    let producer = Load::produce(node, "scaling");
    let consumer = Load::spawn(
        node,
        &[
            "consume",
            "scaling",
            "--group",
            "scale-readers",
            "--from-beginning",
            "--timeout",
            "20s",
        ],
    );
    wait_for_records(node, "scaling", 200);
    let started = Instant::now();
    scale_to(node, 4);
    let spread_up = node.wait(
        "4 brokers ready, replicas even over them (within one) and leaders (within two)",
        ROLL,
        || {
            let (replicas, leaders) = spread(node, 4)?;
            (ready_brokers(node).len() == 4
                && replicas[3] > 0
                && even(&replicas, 1)
                && even(&leaders, 2)
                && ["orders", "rolling", "scaling"]
                    .iter()
                    .all(|t| fully_in_sync(node, t, 18)))
            .then_some(replicas)
        },
    );
    let up = started.elapsed();
    let started = Instant::now();
    scale_to(node, 3);
    let spread_down = node.wait(
        "broker 3 drained, its Pod gone, replicas and leaders even over 3",
        ROLL,
        || {
            let placed = placements(node);
            if placed.iter().any(|(r, _, _)| r.contains(&3)) {
                return None;
            }
            let (replicas, leaders) = spread(node, 3)?;
            (ready_brokers(node).len() == 3
                && node.get(NS, "pod/main-3", "{.metadata.name}").is_empty()
                && even(&replicas, 1)
                && even(&leaders, 2))
            .then_some(replicas)
        },
    );
    node.wait("the removed broker's claim released", START, || {
        node.get(NS, "pvc/data-main-3", "{.metadata.name}")
            .is_empty()
            .then_some(())
    });
    let down = started.elapsed();
    node.wait("every partition in sync after scaling", START, || {
        ["orders", "rolling", "scaling"]
            .iter()
            .all(|t| fully_in_sync(node, t, 18))
            .then_some(())
    });
    let (acknowledged, errors, consumed) = finish_load(node, producer, consumer);
    Scaled {
        up,
        down,
        acknowledged,
        errors,
        consumed,
        spread_up,
        spread_down,
    }
}

/// What a roll under load measured.
struct Roll {
    took: Duration,
    acknowledged: usize,
    errors: usize,
    consumed: usize,
    smallest_isr: usize,
}

/// Changes the brokers' config and watches the operator roll them while a producer writes
/// with `acks=all` (retries allowed) and a group consumer reads, from a client Pod: nothing
/// acknowledged is lost, no error reaches the producer, no partition's ISR goes below its
/// minimum, every record is consumed.
fn roll_under_load(node: &Node, brokers: &[(String, String)]) -> Roll {
    node.apply(
        NS,
        "apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: rolling}
spec:
  cluster: main
  partitions: 6
  replicationFactor: 3
  config: {min.insync.replicas: \"2\"}
---
apiVersion: v1
kind: Pod
metadata: {name: weir-client}
spec:
  securityContext: {runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true}
  containers:
  - name: client
    image: weir/weir-broker:0.1.0
    imagePullPolicy: Never
    command: [/bin/busybox, sleep, \"86400\"]
",
    );
    node.wait(
        "the rolling topic in sync and the client Pod ready",
        START,
        || {
            let ready = node.get(
                NS,
                "pod/weir-client",
                r#"{.status.conditions[?(@.type=="Ready")].status}"#,
            );
            (ready == "True" && fully_in_sync(node, "rolling", 18)).then_some(())
        },
    );
    let producer = Load::produce(node, "rolling");
    let consumer = Load::spawn(
        node,
        &[
            "consume",
            "rolling",
            "--group",
            "roll-readers",
            "--from-beginning",
            "--timeout",
            "20s",
        ],
    );
    // Some records in before the roll starts.
    wait_for_records(node, "rolling", 200);
    let before = ready_brokers(node);
    assert_eq!(before.len(), brokers.len());
    let started = Instant::now();
    patch_cluster(
        node,
        r#"{"spec":{"topicDefaults":{"retention.ms":"86400000"}}}"#,
    );
    let mut smallest_isr = usize::MAX;
    node.wait(
        "every broker restarted, one at a time, with the new config",
        ROLL,
        || {
            for topic in ["rolling", "orders"] {
                let isr = node.get(
                    NS,
                    &format!("topic/{topic}"),
                    "{range .status.partitions[*]}{.isr}{\"\\n\"}{end}",
                );
                for line in isr.lines() {
                    smallest_isr = smallest_isr.min(line.matches(',').count() + 1);
                }
            }
            let now = ready_brokers(node);
            let restarted = now
                .iter()
                .filter(|(_, uid)| !before.iter().any(|(_, b)| b == uid))
                .count();
            let stable = node.get(
                NS,
                "cluster/main",
                r#"{.status.conditions[?(@.type=="Progressing")].reason}"#,
            );
            (now.len() == 3 && restarted == 3 && stable == "Stable").then_some(())
        },
    );
    let took = started.elapsed();
    node.wait("every partition in sync after the roll", START, || {
        (fully_in_sync(node, "rolling", 18) && fully_in_sync(node, "orders", 18)).then_some(())
    });
    let (acknowledged, errors, consumed) = finish_load(node, producer, consumer);
    assert!(
        smallest_isr >= 2,
        "an ISR fell to {smallest_isr}, below min.insync.replicas"
    );
    Roll {
        took,
        acknowledged,
        errors,
        consumed,
        smallest_isr,
    }
}

/// Waits until the partitions of `topic` hold at least `count` committed records (the
/// producer is under way), as `weir topic describe` from the client Pod sees them.
fn wait_for_records(node: &Node, topic: &str, count: i64) {
    node.wait(&format!("{count} records in {topic}"), START, || {
        let output = node.kubectl(&[
            "exec",
            "-n",
            NS,
            "weir-client",
            "--",
            "weir",
            "--bootstrap",
            "main:9192",
            "topic",
            "describe",
            topic,
            "--format",
            "json",
        ]);
        let described: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let committed: i64 = described["partitions"]
            .as_array()?
            .iter()
            .filter_map(|p| p["high_watermark"].as_i64())
            .sum();
        (committed >= count).then_some(())
    });
}

/// Ends the producer and waits for the consumer: no produce error reached the application,
/// and every acknowledged record was consumed (duplicates allowed, losses not). Returns
/// `(acknowledged, errors, distinct records consumed)`.
fn finish_load(node: &Node, producer: Load, consumer: Load) -> (usize, usize, usize) {
    let (acknowledged, errors) = producer.finish(node);
    let consumed = consumer.wait(node, Duration::from_secs(120));
    let mut read: Vec<&str> = consumed.lines().collect();
    read.sort_unstable();
    read.dedup();
    assert_eq!(errors, 0, "no produce error reached the application");
    assert_eq!(
        read.len(),
        acknowledged,
        "every acknowledged record consumed (duplicates allowed, losses not)"
    );
    (acknowledged, errors, read.len())
}

/// A `weir` command running in the client Pod, its output drained as it comes (a full pipe
/// would stall it).
struct Load {
    child: Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
    /// For a producer: stops the writer of its input.
    stop: Option<(Arc<AtomicBool>, std::thread::JoinHandle<usize>)>,
}

fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        text
    })
}

impl Load {
    fn spawn(node: &Node, args: &[&str]) -> Load {
        let mut full = vec![
            "exec",
            "-i",
            "-n",
            NS,
            "weir-client",
            "--",
            "weir",
            "--bootstrap",
            "main:9192",
        ];
        full.extend_from_slice(args);
        let mut child = node.spawn_kubectl(&full);
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Load {
            child,
            stdout,
            stderr,
            stop: None,
        }
    }

    /// `weir produce --acks all --report` fed a record every 5 ms until [`Load::finish`].
    fn produce(node: &Node, topic: &str) -> Load {
        let mut load = Load::spawn(
            node,
            &[
                "produce", topic, "--acks", "all", "--report", "--format", "json",
            ],
        );
        let mut input = load.child.stdin.take().expect("piped stdin");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    if writeln!(input, "roll-{sent}").is_err() {
                        break;
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                sent
            })
        };
        load.stop = Some((stop, writer));
        load
    }

    /// Ends the producer's input and waits for it: `(acknowledged, failed)` from its reports.
    fn finish(mut self, node: &Node) -> (usize, usize) {
        let (stop, writer) = self.stop.take().expect("a producer");
        stop.store(true, Ordering::Relaxed);
        let sent = writer.join().expect("writer");
        let reports = self.wait(node, Duration::from_secs(180));
        let acknowledged = reports.lines().filter(|l| l.contains("\"offset\"")).count();
        let failed = reports.lines().filter(|l| l.contains("\"error\"")).count();
        assert_eq!(
            acknowledged + failed,
            sent,
            "a report per record:\n{reports}"
        );
        (acknowledged, failed)
    }

    /// Waits for the command (with a deadline); its standard output. It must succeed.
    fn wait(mut self, node: &Node, limit: Duration) -> String {
        // A producer's input is closed first, or it never ends.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "a client command did not finish within {limit:?}{}",
                    node.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let out = self.stdout.join().expect("output");
        let err = self.stderr.join().expect("errors");
        assert!(status.success(), "client command failed ({status}): {err}");
        out
    }
}
