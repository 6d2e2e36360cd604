//! A real kube-apiserver and etcd on loopback, for tests (../shared/TESTING.md §1).
//!
//! The API server is built by `.ci/kube-apiserver` (cached under `~/.cache/weir`); etcd comes
//! from Debian's `etcd-server`. Without them a test says so and passes only outside CI: CI
//! (`CI` set) runs the build first and fails here if it is missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::{Client, Config};

pub const TOKEN: &str = "weir-test-admin-token";
/// Every wait here has this deadline.
pub const DEADLINE: Duration = Duration::from_secs(90);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn apiserver_binary() -> Option<PathBuf> {
    let path = std::env::var_os("WEIR_KUBE_APISERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/weir/kube-apiserver-1.20.2"))
        })?;
    path.exists().then_some(path)
}

/// Processes killed when dropped.
pub struct Running(pub Vec<Child>);

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

pub async fn client(port: u16) -> Client {
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

/// A running API server (and its etcd), stopped when dropped.
pub struct ApiServer {
    /// Dropped first: the processes stop before their directory goes.
    _running: Running,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl ApiServer {
    /// A kubeconfig for kubectl, helm and the operator: the admin token, TLS unverified.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig_for("admin", TOKEN)
    }

    /// A kubeconfig for `user` authenticating with `token` (a service account's, say).
    pub fn kubeconfig_for(&self, user: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{user}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n    namespace: default\ncurrent-context: test\n",
                self.port
            ),
        )
        .expect("write the kubeconfig");
        path
    }
}

/// helm, as `.ci/helm` caches it (or `WEIR_HELM`); `None` when absent outside CI, where its
/// absence fails the test.
pub fn helm_binary() -> Option<PathBuf> {
    let path = std::env::var_os("WEIR_HELM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/weir/helm-3.6.2"))
        })
        .filter(|p| p.exists());
    if path.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no helm: CI must run .ci/helm first"
        );
        eprintln!("skipped: no helm (run .ci/helm to fetch it)");
    }
    path
}

/// A ready API server and a client of it; `None` (with a line on stderr) when there is no
/// kube-apiserver binary outside CI. In CI a missing binary fails the test.
pub async fn api_server() -> Option<(ApiServer, Client)> {
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
    Some((
        ApiServer {
            _running: running,
            dir,
            port,
        },
        client,
    ))
}
