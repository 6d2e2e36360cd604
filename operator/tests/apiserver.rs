//! The CRDs against a real kube-apiserver and etcd on loopback: they are accepted, a Topic
//! as users write it is stored, and bad specs are refused by the schema with a message that
//! names the field.
//!
//! The API server is built by `.ci/kube-apiserver` (cached under `~/.cache/weir`); etcd comes
//! from Debian's `etcd-server`. Without them this test says so and passes only outside CI: CI
//! (`CI` set) runs the build first and fails here if it is missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use weir_operator::crd::{
    Cluster, ClusterSpec, ConsumerGroup, RackSpec, StorageSpec, Topic, TopicSpec,
};

const TOKEN: &str = "weir-test-admin-token";
/// Every wait here has this deadline.
const DEADLINE: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn apiserver_binary() -> Option<PathBuf> {
    let path = std::env::var_os("WEIR_KUBE_APISERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/weir/kube-apiserver-1.20.2"))
        })?;
    path.exists().then_some(path)
}

/// Processes killed when dropped.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(dir: &Path, apiserver: &Path) -> (Running, u16) {
    let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
    let etcd = Command::new("etcd")
        .args([
            "--name",
            "t",
            "--data-dir",
            &dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client_port}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client_port}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer_port}"),
            "--initial-cluster",
            &format!("t=http://127.0.0.1:{peer_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(log("etcd.log"))
        .spawn()
        .expect("start etcd (Debian's etcd-server)");
    let mut running = Running(vec![etcd]);
    let key = dir.join("sa.key");
    let public = dir.join("sa.pub");
    let made = Command::new("openssl")
        .args(["genrsa", "-out", &key.display().to_string(), "2048"])
        .stderr(Stdio::null())
        .status()
        .and_then(|_| {
            Command::new("openssl")
                .args([
                    "rsa",
                    "-in",
                    &key.display().to_string(),
                    "-pubout",
                    "-out",
                    &public.display().to_string(),
                ])
                .stderr(Stdio::null())
                .status()
        })
        .expect("openssl");
    assert!(
        made.success(),
        "openssl could not make the service-account key"
    );
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{TOKEN},admin,admin-uid,system:masters\n"),
    )
    .expect("tokens");
    let apiserver = Command::new(apiserver)
        .args([
            &format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={api_port}"),
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            &format!("--cert-dir={}", dir.join("certs").display()),
            &format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            &format!("--service-account-key-file={}", public.display()),
            &format!("--service-account-signing-key-file={}", key.display()),
            "--service-cluster-ip-range=10.0.0.0/24",
            "--disable-admission-plugins=ServiceAccount",
        ])
        .stdout(Stdio::null())
        .stderr(log("apiserver.log"))
        .spawn()
        .expect("start kube-apiserver");
    running.0.push(apiserver);
    (running, api_port)
}

async fn client(port: u16) -> Client {
    let url = format!("https://127.0.0.1:{port}").parse().expect("a URL");
    let mut config = Config::new(url);
    config.accept_invalid_certs = true;
    config.auth_info.token = Some(TOKEN.to_string().into());
    Client::try_from(config).expect("a client")
}

async fn wait_ready(client: &Client, dir: &Path) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("request");
        // Ready, and its bootstrap has made the "default" namespace (it does that just after
        // it reports ready).
        let default = http::Request::get("/api/v1/namespaces/default")
            .body(Vec::new())
            .expect("request");
        if client
            .request_text(request)
            .await
            .is_ok_and(|t| t.trim() == "ok")
            && client.request_text(default).await.is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver not ready within {DEADLINE:?}; its log:\n{}",
            std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A ready API server and a client of it; `None` (with a line on stderr) when there is no
/// kube-apiserver binary outside CI. In CI a missing binary fails the test.
async fn api_server() -> Option<((Running, tempfile::TempDir), Client)> {
    let Some(apiserver) = apiserver_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no kube-apiserver: CI must run .ci/kube-apiserver first"
        );
        eprintln!("skipped: no kube-apiserver (run .ci/kube-apiserver to build it)");
        return None;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (running, port) = start(dir.path(), &apiserver);
    let client = client(port).await;
    wait_ready(&client, dir.path()).await;
    // Fields drop in order: the processes stop before their directory goes.
    Some(((running, dir), client))
}

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
    let example: Cluster = serde_saphyr::from_str(&read("cluster.yaml")).expect("cluster.yaml");
    Api::<Cluster>::namespaced(client.clone(), "examples")
        .create(&post, &example)
        .await
        .expect("cluster.yaml is accepted");
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
