//! kubectl and helm against the real node `tests/node/run` brings up, with deadlines on every
//! wait and the cluster's state printed when one passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The node under test, from the environment `tests/node/run` (through `.ci/kube-node`) sets.
pub struct Node {
    pub kubeconfig: PathBuf,
    /// The node's run directory: volumes for PersistentVolumes go under it.
    pub dir: PathBuf,
    pub name: String,
    kubectl: PathBuf,
    pub helm: PathBuf,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the real-node tests with tests/node/run (README: Testing)")
    })
}

impl Node {
    pub fn from_env() -> Node {
        let kubeconfig = PathBuf::from(env("KUBECONFIG"));
        let cache = PathBuf::from(env("HOME")).join(".cache/weir");
        let kubectl = which("kubectl").unwrap_or_else(|| cache.join("kubectl-1.20.2"));
        Node {
            dir: kubeconfig
                .parent()
                .expect("the run directory")
                .to_path_buf(),
            kubeconfig,
            name: env("WEIR_NODE_NAME"),
            kubectl,
            helm: PathBuf::from(env("WEIR_HELM")),
        }
    }

    /// kubectl with `input` on its standard input.
    pub fn kubectl_in(&self, args: &[&str], input: &str) -> Output {
        let mut full = vec!["--request-timeout=60s"];
        full.extend_from_slice(args);
        let mut child = self.spawn_kubectl(&full);
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A command that does not read its input may close it first.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child.wait_with_output().expect("wait for kubectl")
    }

    /// kubectl started with its standard streams piped, for a command that runs a while.
    pub fn spawn_kubectl(&self, args: &[&str]) -> std::process::Child {
        Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in(args, "")
    }

    /// kubectl that must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, "")
    }

    pub fn ok_in(&self, args: &[&str], input: &str) -> String {
        let output = self.kubectl_in(args, input);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            self.diagnostics()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn apply(&self, namespace: &str, yaml: &str) {
        self.ok_in(&["apply", "-n", namespace, "-f", "-"], yaml);
    }

    /// `kubectl get ... -o jsonpath=PATH` in `namespace` (or `--all-namespaces`), empty
    /// when the object is missing.
    pub fn get(&self, namespace: &str, object: &str, path: &str) -> String {
        let scope = if namespace == "--all-namespaces" {
            vec![namespace]
        } else {
            vec!["-n", namespace]
        };
        let jsonpath = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend(scope);
        args.extend([object, "-o", jsonpath.as_str()]);
        let output = self.kubectl(&args);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn helm(&self, args: &[&str]) -> String {
        let output = Command::new(&self.helm)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("run helm");
        assert!(
            output.status.success(),
            "helm {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            self.diagnostics()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Polls `check` every half second until it gives a value; past `limit`, panics with
    /// `what` and the cluster's state.
    pub fn wait<T>(&self, what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// What a person would look at first: every Pod, the resources, recent events and the
    /// logs of the operator and brokers.
    pub fn diagnostics(&self) -> String {
        let mut text = String::from("\n--- diagnostics");
        let mut run = |title: &str, args: &[&str]| {
            let output = self.kubectl(args);
            text.push_str(&format!(
                "\n--- {title}\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        };
        run("pods", &["get", "pods", "-A", "-o", "wide"]);
        run(
            "weir resources",
            &[
                "get",
                "clusters,topics,consumergroups,statefulsets,pvc",
                "-A",
            ],
        );
        run(
            "events",
            &["get", "events", "-A", "--sort-by=.lastTimestamp"],
        );
        run(
            "operator log",
            &[
                "logs",
                "-n",
                "weir-system",
                "-l",
                "app.kubernetes.io/name=weir-operator",
                "--tail=60",
                "--all-containers",
            ],
        );
        run(
            "broker logs",
            &[
                "logs",
                "-l",
                "app.kubernetes.io/name=weir-broker",
                "--tail=30",
                "--prefix",
            ],
        );
        text
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| Path::new(p).is_file())
    })
}
