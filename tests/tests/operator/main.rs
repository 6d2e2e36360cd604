//! The operator end to end, against a real kube-apiserver and etcd on loopback: two
//! `weir-operator` processes elect a leader through a Lease; `kubectl apply` of the
//! quickstart manifests yields the Cluster's objects; three real broker processes, started
//! here in place of the pods a kubelet would start, register with the operator's controller
//! endpoint; the Topic gets its partitions, takes produce and consume through the CLI and shows
//! leaders and ISR in `kubectl get topics`; a killed broker moves the leader in the Topic's
//! status; a ConsumerGroup shows lag and its reset moves the offsets; the operator holding the
//! Lease is killed and the other takes over; bad specs get conditions; a deleted Topic's
//! topic is deleted from the brokers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use weir_operator::crd::{Cluster, ConsumerGroup, Topic};

#[path = "../../../operator/tests/support/apiserver.rs"]
mod apiserver;
#[path = "../broker/harness.rs"]
#[allow(dead_code, reason = "the harness serves other tests too")]
mod harness;

use apiserver::{api_server, helm_binary};
use harness::{BrokerProcess, weir_ok};

/// Every wait of this test has this deadline.
const DEADLINE: Duration = Duration::from_secs(60);
const LEASE: &str = "4s";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `weir-operator` process, killed when dropped.
struct OperatorProcess {
    child: Child,
    identity: String,
    grpc: String,
    http: String,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(kubeconfig: &Path, dir: &Path, identity: &str) -> OperatorProcess {
        let log = dir.join(format!("{identity}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir-operator-under-test"))
            .args([
                "--identity",
                identity,
                "--lease-namespace",
                "default",
                "--lease-duration",
                LEASE,
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--heartbeat-interval",
                "250ms",
                "--session-timeout",
                "2s",
                "--resync",
                "1s",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start weir-operator");
        let line = harness::ready_line(&mut child, DEADLINE).unwrap_or_else(|| {
            panic!(
                "the operator did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let field = |name: &str| harness::ready_field(&line, name);
        OperatorProcess {
            child,
            identity: identity.to_string(),
            grpc: field("grpc"),
            http: field("http"),
            log,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `GET path` on the HTTP listener: the status line and the body.
    fn http_get(&self, path: &str) -> (String, String) {
        harness::http_get(&self.http, path)
    }

    /// The reconciliations counted in `/metrics`, over every kind.
    fn reconciliations(&self) -> u64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .filter(|l| l.starts_with("weir_operator_reconciliations_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The machine's kubectl, or the one `.ci/kube-apiserver` built when there was none.
fn kubectl_binary() -> PathBuf {
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/weir/kubectl-1.20.2"))
        .filter(|p| p.exists());
    cached.unwrap_or_else(|| PathBuf::from("kubectl"))
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    kubectl_with_input(kubeconfig, args, "")
}

/// kubectl with `input` on its standard input.
fn kubectl_with_input(kubeconfig: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(kubectl_binary())
        .args(["--request-timeout=30s"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl (on PATH)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write to kubectl");
    drop(stdin);
    child.wait_with_output().expect("wait for kubectl")
}

/// `kubectl apply` of the YAML `text`.
fn apply(kubeconfig: &Path, text: &str) -> Output {
    kubectl_with_input(kubeconfig, &["apply", "-f", "-"], text)
}

fn apply_ok(kubeconfig: &Path, text: &str) {
    let output = apply(kubeconfig, text);
    assert!(
        output.status.success(),
        "kubectl apply failed: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A JSON merge patch of `kind/name`.
fn patch_ok(kubeconfig: &Path, kind: &str, name: &str, patch: &str) {
    kubectl_ok(
        kubeconfig,
        &["patch", kind, name, "--type", "merge", "-p", patch],
    );
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let output = kubectl(kubeconfig, args);
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `check` until it gives a value; panics with `what` and the operators' logs past the
/// deadline.
async fn wait_for<T, F, Fut>(what: &str, logs: &[&Path], mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs
                .iter()
                .map(|p| {
                    let text = std::fs::read_to_string(p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    format!(
                        "--- {}\n{}",
                        p.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .collect();
            panic!("{what}: not within {DEADLINE:?}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("weir-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

fn ready(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(&str, &str)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

fn start_broker(dir: &Path, id: i32, controllers: &str) -> BrokerProcess {
    BrokerProcess::start(
        &dir.join(format!("broker-{id}")),
        &[
            "--id",
            &id.to_string(),
            "--controller",
            controllers,
            "--cluster-secret-file",
            &dir.join("cluster-secret").display().to_string(),
            "--cluster",
            "default/main",
            "--replica-lag-time-max",
            "2s",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_a_cluster_of_broker_processes() {
    let Some(helm) = helm_binary() else {
        return;
    };
    let Some((server, client)) = api_server().await else {
        return;
    };
    let kubeconfig = server.kubeconfig();
    let dir = tempfile::tempdir().expect("dir");
    let root = repo();

    // The CRDs, applied with kubectl as a user would.
    kubectl_ok(
        &kubeconfig,
        &["apply", "-f", &root.join("crds").display().to_string()],
    );
    kubectl_ok(
        &kubeconfig,
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/clusters.weir.dev",
            "crd/topics.weir.dev",
            "crd/consumergroups.weir.dev",
        ],
    );

    // The operators run as the chart's ServiceAccount, with the chart's RBAC and nothing more.
    let rbac = Command::new(&helm)
        .args(["template", "weir"])
        .arg(root.join("charts/weir"))
        .args([
            "--namespace",
            "default",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ])
        .output()
        .expect("run helm");
    assert!(
        rbac.status.success(),
        "{}",
        String::from_utf8_lossy(&rbac.stderr)
    );
    apply_ok(&kubeconfig, &String::from_utf8_lossy(&rbac.stdout));
    let token =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), "default")
            .create_token_request(
                "weir",
                &Default::default(),
                &k8s_openapi::api::authentication::v1::TokenRequest {
                    spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                        expiration_seconds: Some(3600),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .expect("a token for the operator's ServiceAccount")
            .status
            .expect("the token")
            .token;
    let operator_kubeconfig = server.kubeconfig_for("weir-operator", &token);
    // It is the least the chart grants: no Secrets, for one.
    let secrets = kubectl(&operator_kubeconfig, &["get", "secrets"]);
    assert!(
        !secrets.status.success() && String::from_utf8_lossy(&secrets.stderr).contains("forbidden"),
        "{secrets:?}"
    );

    // Two operators: one holds the Lease.
    let mut operators = vec![
        OperatorProcess::start(&operator_kubeconfig, dir.path(), "operator-a"),
        OperatorProcess::start(&operator_kubeconfig, dir.path(), "operator-b"),
    ];
    let logs: Vec<PathBuf> = operators.iter().map(|o| o.log.clone()).collect();
    let logs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let leader = wait_for("an operator holds the Lease", &logs, || holder(&leases)).await;
    eprintln!("the Lease is held by {leader}");
    // Only the holder is ready (once it has seen its win).
    let ready_ones = || {
        operators
            .iter()
            .filter(|o| o.http_get("/readyz").0.contains("200"))
            .map(|o| o.identity.clone())
            .collect::<Vec<_>>()
    };
    wait_for("the holder is ready", &logs, || async {
        ready_ones().contains(&leader).then_some(())
    })
    .await;
    assert_eq!(ready_ones(), std::slice::from_ref(&leader));
    // The other answers the controller's calls with NOT_CONTROLLER, naming the holder; the
    // holder wants to know which cluster a call is for.
    let call = |address: String, cluster: Option<&'static str>| async move {
        let mut client = weir_proto::v1::controller_client::ControllerClient::connect(format!(
            "http://{address}"
        ))
        .await
        .expect("connect to an operator");
        let mut request = tonic::Request::new(weir_proto::v1::BrokerHeartbeatRequest {
            broker_id: 0,
            incarnation: 1,
        });
        if let Some(cluster) = cluster {
            request.metadata_mut().insert(
                weir_proto::CLUSTER_HEADER,
                cluster.parse().expect("an ASCII value"),
            );
        }
        client
            .broker_heartbeat(request)
            .await
            .expect_err("no controller answers this")
    };
    let follower = operators
        .iter()
        .find(|o| o.identity != leader)
        .expect("two operators");
    // (The follower learns the holder's name at its next look at the Lease.)
    let refused = wait_for("the follower names the holder", &logs, || async {
        let refused = call(follower.grpc.clone(), Some("default/main")).await;
        refused.message().contains(&leader).then_some(refused)
    })
    .await;
    assert_eq!(
        weir_proto::Reason::of(&refused),
        Some(weir_proto::Reason::NotController),
        "{refused:?}"
    );
    let holding = operators
        .iter()
        .find(|o| o.identity == leader)
        .expect("the holder");
    let unnamed = call(holding.grpc.clone(), None).await;
    assert_eq!(
        weir_proto::Reason::of(&unnamed),
        Some(weir_proto::Reason::InvalidRequest),
        "{unnamed:?}"
    );
    let unknown = call(holding.grpc.clone(), Some("default/nowhere")).await;
    assert_eq!(
        unknown.code(),
        tonic::Code::FailedPrecondition,
        "{unknown:?}"
    );

    // The production example Cluster (racks from zones): its objects, and its status from
    // the leader.
    kubectl_ok(
        &kubeconfig,
        &[
            "apply",
            "-f",
            &root
                .join("manifests/cluster-production.yaml")
                .display()
                .to_string(),
        ],
    );
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "default");
    wait_for(
        "the Cluster's status names its controller",
        &logs,
        || async {
            let c = clusters.get("main").await.ok()?;
            let s = c.status?;
            (s.controller.as_deref() == Some(leader.as_str()) && s.desired_brokers == 3)
                .then_some(())
        },
    )
    .await;
    let objects = kubectl_ok(
        &kubeconfig,
        &[
            "get",
            "statefulset/main",
            "service/main",
            "service/main-brokers",
            "configmap/main-broker-config",
            "poddisruptionbudget/main",
            "-o",
            "name",
        ],
    );
    assert_eq!(objects.lines().count(), 5, "{objects}");
    let config = kubectl_ok(
        &kubeconfig,
        &[
            "get",
            "configmap/main-broker-config",
            "-o",
            "jsonpath={.data.broker\\.toml}",
        ],
    );
    assert!(config.contains("cluster = \"default/main\""), "{config}");
    let owner = kubectl_ok(
        &kubeconfig,
        &[
            "get",
            "statefulset/main",
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}",
        ],
    );
    assert_eq!(owner, "Cluster");

    // The pods a kubelet would run, on nodes of three zones: the Cluster's rack key
    // (topology.kubernetes.io/zone) gives each broker its node's zone as its rack.
    let mut placement = String::new();
    for (id, zone) in [(0, "a"), (1, "b"), (2, "c")] {
        placement.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-{zone}\n  labels:\n    topology.kubernetes.io/zone: zone-{zone}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: main-{id}\nspec:\n  nodeName: node-{zone}\n  containers:\n  - name: broker\n    image: weir/weir-broker:0.1.0\n---\n"
        ));
    }
    apply_ok(&kubeconfig, &placement);

    // Three brokers register with the operator's controller endpoint (given both operators'
    // addresses, as a Service would lead them to the ready one).
    let controllers = format!("{},{}", operators[0].grpc, operators[1].grpc);
    // The cluster secret the operator made, as a pod would have it mounted.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), "default");
    let secret = wait_for("the cluster secret", &logs, || async {
        let secret = secrets.get_opt("main-cluster-secret").await.ok()??;
        let value = secret.data?.get("cluster-secret")?.0.clone();
        Some(String::from_utf8(value).expect("ASCII"))
    })
    .await;
    std::fs::write(dir.path().join("cluster-secret"), &secret).expect("write the secret");
    // Without it, the endpoint refuses a call naming the cluster.
    let mut endpoints = Vec::new();
    for operator in &operators {
        let mut raw = weir_proto::v1::controller_client::ControllerClient::connect(format!(
            "http://{}",
            operator.grpc
        ))
        .await
        .expect("connect");
        let mut request =
            tonic::Request::new(weir_proto::v1::WatchMetadataRequest { broker_id: None });
        request.metadata_mut().insert(
            weir_proto::CLUSTER_HEADER,
            "default/main".parse().expect("ascii"),
        );
        endpoints.push(raw.watch_metadata(request).await.err().map(|s| s.code()));
    }
    assert!(
        endpoints.contains(&Some(tonic::Code::Unauthenticated)),
        "the leading operator refuses a call without the secret: {endpoints:?}"
    );
    let mut brokers: Vec<Option<BrokerProcess>> = (0..3)
        .map(|id| Some(start_broker(dir.path(), id, &controllers)))
        .collect();
    let bootstrap = brokers[0].as_ref().expect("broker 1").address.clone();
    wait_for("three brokers registered", &logs, || async {
        let s = clusters.get("main").await.ok()?.status?;
        (s.registered_brokers == 3 && s.brokers.iter().filter(|b| b.alive).count() == 3)
            .then_some(())
    })
    .await;
    let registered = clusters
        .get("main")
        .await
        .expect("cluster")
        .status
        .expect("status")
        .brokers;
    let racks: Vec<(i32, Option<&str>)> = registered
        .iter()
        .map(|b| (b.id, b.rack.as_deref()))
        .collect();
    assert_eq!(
        racks,
        [
            (0, Some("zone-a")),
            (1, Some("zone-b")),
            (2, Some("zone-c")),
        ]
    );

    // The quickstart Topic gets six partitions of three replicas.
    kubectl_ok(
        &kubeconfig,
        &[
            "apply",
            "-f",
            &root.join("manifests/topic.yaml").display().to_string(),
        ],
    );
    let topics: Api<Topic> = Api::namespaced(client.clone(), "default");
    let status = wait_for(
        "the Topic's partitions have leaders and a full ISR",
        &logs,
        || async {
            let t = topics.get("orders").await.ok()?;
            let s = t.status?;
            (s.partitions.len() == 6
                && s.partitions
                    .iter()
                    .all(|p| p.leader.is_some() && p.isr.len() == 3)
                && (ready(&s.conditions) == Some(("True", "Created"))
                    || ready(&s.conditions) == Some(("True", "InSync"))))
            .then_some(s)
        },
    )
    .await;
    assert!(status.topic_id.is_some());
    assert_eq!(
        status.config.get("retention.ms").map(String::as_str),
        Some("86400000")
    );
    let table = kubectl_ok(&kubeconfig, &["get", "topics", "-o", "wide"]);
    eprintln!("{table}");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("LEADERS") && header.contains("IN-SYNC"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("orders "))
        .unwrap_or_else(|| panic!("no orders row: {table}"));
    let leaders: Vec<String> = status
        .partitions
        .iter()
        .map(|p| p.leader.expect("a leader").to_string())
        .collect();
    assert!(
        row.contains(&leaders.join(",")) && row.contains("18/18"),
        "{table}"
    );

    // Produce and consume through the CLI.
    let lines: String = (0..100).map(|i| format!("order-{i}\n")).collect();
    weir_ok(&bootstrap, &["produce", "orders", "--acks", "all"], &lines);
    let consumed = weir_ok(
        &bootstrap,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "100",
            "--timeout",
            "10s",
        ],
        "",
    );
    assert_eq!(consumed.lines().count(), 100, "{consumed}");
    let more: String = (100..140).map(|i| format!("order-{i}\n")).collect();
    weir_ok(&bootstrap, &["produce", "orders", "--acks", "all"], &more);

    // Scaling down past brokers that hold replicas is refused: the StatefulSet keeps them.
    let scale = |brokers: i32| {
        patch_ok(
            &kubeconfig,
            "cluster",
            "main",
            &format!(r#"{{"spec":{{"brokers":{brokers}}}}}"#),
        )
    };
    scale(2);
    wait_for(
        "scaling down is refused with a condition",
        &logs,
        || async {
            let s = clusters.get("main").await.ok()?.status?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason == "ScaleDownBlocked")
                .then_some(())
        },
    )
    .await;
    let replicas = kubectl_ok(
        &kubeconfig,
        &["get", "statefulset/main", "-o", "jsonpath={.spec.replicas}"],
    );
    assert_eq!(replicas, "3");
    scale(3);
    wait_for("the refusal clears", &logs, || async {
        let s = clusters.get("main").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "False")
            .then_some(())
    })
    .await;

    // The ConsumerGroup shows the lag, and its reset moves the offsets.
    kubectl_ok(
        &kubeconfig,
        &[
            "apply",
            "-f",
            &root
                .join("manifests/consumergroup.yaml")
                .display()
                .to_string(),
        ],
    );
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), "default");
    wait_for("the ConsumerGroup's lag is 40", &logs, || async {
        let s = groups.get("billing").await.ok()?.status?;
        (s.total_lag == 40 && s.members == 0).then_some(())
    })
    .await;
    // A reset waits while the group has a member: one that reads the 40 and leaves once
    // nothing comes for a few seconds.
    let member = {
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || {
            weir_ok(
                &bootstrap,
                &["consume", "orders", "--group", "billing", "--timeout", "4s"],
                "",
            )
        })
    };
    wait_for("the group has its member", &logs, || async {
        let s = groups.get("billing").await.ok()?.status?;
        (s.members == 1).then_some(())
    })
    .await;
    let reset = |patch: &str| patch_ok(&kubeconfig, "consumergroup", "billing", patch);
    reset(r#"{"spec":{"resetOffsets":{"topic":"orders","to":"earliest"}}}"#);
    wait_for("the reset waits for the member to go", &logs, || async {
        let s = groups.get("billing").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "OffsetsReset" && c.reason == "GroupHasMembers")
            .then_some(())
    })
    .await;
    let read = member.join().expect("the member");
    assert_eq!(read.lines().count(), 40, "{read}");
    wait_for("the reset to earliest makes the lag 140", &logs, || async {
        let g = groups.get("billing").await.ok()?;
        let s = g.status?;
        (s.total_lag == 140 && s.applied_reset_generation == g.metadata.generation).then_some(())
    })
    .await;

    // A killed broker: the Topic's status shows partition 0's leader move.
    let old = status.partitions[0].leader.expect("a leader");
    let killed = usize::try_from(old).expect("ids from 0, as pod ordinals");
    let stopped = Instant::now();
    brokers[killed].take().expect("running").kill();
    let moved = wait_for(
        "partition 0 gets a new leader in the Topic's status",
        &logs,
        || async {
            let s = topics.get("orders").await.ok()?.status?;
            s.partitions[0].leader.filter(|l| *l != old)
        },
    )
    .await;
    eprintln!(
        "broker {old} killed: partition 0 led by {moved} in the Topic's status after {:?}",
        stopped.elapsed()
    );
    wait_for("the Cluster is Degraded", &logs, || async {
        let s = clusters.get("main").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "BrokersDead")
            .then_some(())
    })
    .await;
    brokers[killed] = Some(start_broker(dir.path(), old, &controllers));

    // The operator holding the Lease dies; the other takes over, the brokers follow it.
    let epoch_before = clusters
        .get("main")
        .await
        .expect("cluster")
        .status
        .and_then(|s| s.controller_epoch)
        .expect("an epoch");
    let index = operators
        .iter()
        .position(|o| o.identity == leader)
        .expect("the holder is ours");
    let stopped = Instant::now();
    operators[index].kill();
    let next = wait_for("the other operator takes the Lease", &logs, || async {
        holder(&leases).await.filter(|h| *h != leader)
    })
    .await;
    eprintln!(
        "operator {leader} killed: {next} holds the Lease after {:?}",
        stopped.elapsed()
    );
    wait_for("the new controller has every broker", &logs, || async {
        let s = clusters.get("main").await.ok()?.status?;
        (s.controller.as_deref() == Some(next.as_str())
            && s.controller_epoch.is_some_and(|e| e > epoch_before)
            && s.registered_brokers == 3)
            .then_some(())
    })
    .await;
    let survivor = brokers[(killed + 1) % 3]
        .as_ref()
        .expect("running")
        .address
        .clone();
    wait_for(
        "the restarted broker is back in every ISR",
        &logs,
        || async {
            let s = topics.get("orders").await.ok()?.status?;
            s.partitions.iter().all(|p| p.isr.len() == 3).then_some(())
        },
    )
    .await;
    // Its readiness (what a StatefulSet's roll and the PodDisruptionBudget wait on) follows.
    wait_for("the restarted broker is ready", &logs, || async {
        let (status, _) = brokers[killed].as_ref()?.http_get("/readyz");
        status.contains("200").then_some(())
    })
    .await;
    weir_ok(
        &survivor,
        &["produce", "orders", "--acks", "all"],
        "after-failover\n",
    );

    // Resets to the latest offsets, then one partition alone back to offset 0: the lag is then
    // that partition's records.
    let seen = std::sync::Mutex::new(String::new());
    let applied = |lag: i64| {
        let groups = groups.clone();
        let seen = &seen;
        async move {
            let g = groups.get("billing").await.ok()?;
            let s = g.status?;
            // Each new status on stderr: shown if the wait fails.
            let now = format!("{:?} {:?}", g.metadata.generation, s);
            let mut last = seen.lock().unwrap_or_else(|p| p.into_inner());
            if *last != now {
                eprintln!("ConsumerGroup billing: {now}");
                *last = now;
            }
            (s.total_lag == lag && s.applied_reset_generation == g.metadata.generation)
                .then_some(())
        }
    };
    reset(r#"{"spec":{"resetOffsets":{"topic":"orders","to":"latest"}}}"#);
    wait_for("the reset to latest makes the lag 0", &logs, || applied(0)).await;
    let described: serde_json::Value = serde_json::from_str(&weir_ok(
        &survivor,
        &["topic", "describe", "orders", "--output", "json"],
        "",
    ))
    .expect("json");
    // The partition holding the most records (unkeyed records go to partitions in turns, in
    // batches, so some may hold none).
    let (partition, records) = described["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter_map(|p| Some((p["partition"].as_i64()?, p["high_watermark"].as_i64()?)))
        .max_by_key(|(_, hw)| *hw)
        .expect("a partition");
    assert!(records > 0, "{described}");
    eprintln!("partition {partition} holds {records} records: {described}");
    reset(&format!(
        r#"{{"spec":{{"resetOffsets":{{"topic":"orders","to":"offsets","offsets":{{"{partition}":0}}}}}}}}"#
    ));
    wait_for("one partition alone goes back to 0", &logs, || {
        applied(records)
    })
    .await;

    // Bad YAML is refused with the field named: a negative count by the API server's schema,
    // a misspelt field by kubectl's validation (strict by default; a 1.20 server would prune
    // it).
    for (yaml, field) in [
        (
            "partitions: -1\n  replicationFactor: 1\n",
            "spec.partitions",
        ),
        (
            "partitions: 1\n  replicationFactor: 1\n  partitons: 7\n",
            "partitons",
        ),
    ] {
        let refused = apply(
            &kubeconfig,
            &format!(
                "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: invalid\nspec:\n  cluster: main\n  {yaml}"
            ),
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(field),
            "{field}: {stderr}"
        );
    }

    // Bad specs are reported as conditions.
    apply_ok(
        &kubeconfig,
        "apiVersion: weir.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: broken\nspec:\n  brokers: 1\n  storage:\n    size: 1Gi\n  brokerConfig:\n    listen: 0.0.0.0:1\n",
    );
    wait_for(
        "a Cluster overriding a key the operator sets says so",
        &logs,
        || async {
            let s = clusters.get("broken").await.ok()?.status?;
            (ready(&s.conditions) == Some(("False", "InvalidSpec"))
                && s.conditions.iter().any(|c| c.message.contains("listen")))
            .then_some(())
        },
    )
    .await;
    apply_ok(
        &kubeconfig,
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: lost\nspec:\n  cluster: nowhere\n  partitions: 1\n  replicationFactor: 1\n",
    );
    wait_for("a Topic of a missing cluster says so", &logs, || async {
        let s = topics.get("lost").await.ok()?.status?;
        (ready(&s.conditions) == Some(("False", "ClusterNotFound"))).then_some(())
    })
    .await;
    patch_ok(
        &kubeconfig,
        "topic",
        "orders",
        r#"{"spec":{"partitions":3}}"#,
    );
    wait_for("shrinking partitions is refused", &logs, || async {
        let s = topics.get("orders").await.ok()?.status?;
        (ready(&s.conditions) == Some(("False", "PartitionsCannotShrink"))).then_some(())
    })
    .await;
    patch_ok(
        &kubeconfig,
        "topic",
        "orders",
        r#"{"spec":{"partitions":8}}"#,
    );
    wait_for("partitions grow in place", &logs, || async {
        let s = topics.get("orders").await.ok()?.status?;
        (s.partitions.len() == 8 && ready(&s.conditions).is_some_and(|r| r.0 == "True"))
            .then_some(())
    })
    .await;

    // Level-triggered, not looping: with nothing changing, each resource is reconciled about
    // once per resync (1 s here), not again and again on its own status writes.
    let holder_now = operators
        .iter()
        .find(|o| o.identity == next)
        .expect("the new holder");
    let resources = (kubectl_ok(
        &kubeconfig,
        &["get", "clusters,topics,consumergroups", "-o", "name"],
    ))
    .lines()
    .count() as u64;
    let before = holder_now.reconciliations();
    let quiet = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let done = holder_now.reconciliations() - before;
    let bound = resources * (quiet.elapsed().as_secs() + 1) * 3;
    eprintln!(
        "{done} reconciliations of {resources} resources in {:?}",
        quiet.elapsed()
    );
    assert!(
        done <= bound,
        "{done} reconciliations of {resources} resources in {:?}: a loop",
        quiet.elapsed()
    );

    // A topic made with the CLI gets a Topic of its own; a second resource naming it is
    // refused, and deleting that second resource deletes nothing.
    weir_ok(
        &survivor,
        &[
            "topic",
            "create",
            "audit",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        "",
    );
    wait_for("the CLI's topic has a Topic", &logs, || async {
        let s = topics.get("main-audit").await.ok()?.status?;
        s.topic_id.map(|_| ())
    })
    .await;
    apply_ok(
        &kubeconfig,
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: audit\nspec:\n  cluster: main\n  partitions: 1\n  replicationFactor: 1\n",
    );
    wait_for("a second Topic for one topic is refused", &logs, || async {
        let s = topics.get("audit").await.ok()?.status?;
        (ready(&s.conditions) == Some(("False", "DuplicateTopic"))).then_some(())
    })
    .await;
    kubectl_ok(&kubeconfig, &["delete", "topic", "audit", "--timeout=60s"]);
    let listed = weir_ok(&survivor, &["topic", "list"], "");
    let names = |listed: &str| -> Vec<String> {
        listed
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    assert!(names(&listed).contains(&"audit".to_string()), "{listed}");

    // Deleting the Topic deletes the topic (through the finalizer).
    kubectl_ok(&kubeconfig, &["delete", "topic", "orders", "--timeout=60s"]);
    wait_for("the brokers no longer have the topic", &logs, || async {
        let listed = weir_ok(&survivor, &["topic", "list"], "");
        (!names(&listed).contains(&"orders".to_string())).then_some(())
    })
    .await;
    drop(brokers);
    drop(operators);
}
