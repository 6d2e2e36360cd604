//! The harness for tests that start real processes on loopback.
//!
//! [`BrokerProcess`] starts `weir-broker` on ports the kernel picks (it prints the addresses it
//! bound) and kills it when dropped; [`weir`] runs the CLI with a deadline. Every wait has a
//! deadline, so a broken build fails a test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to say it is ready.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one CLI command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// A `weir-broker` child process.
#[derive(Debug)]
pub struct BrokerProcess {
    child: Option<Child>,
    /// The gRPC address, `127.0.0.1:PORT`.
    pub address: String,
    /// The HTTP address for /metrics, /healthz and /readyz.
    pub http_address: String,
    /// The Kafka protocol address.
    #[allow(
        dead_code,
        reason = "the broker tests use it; the other test binaries share this harness"
    )]
    pub kafka_address: String,
    stderr_log: PathBuf,
}

impl BrokerProcess {
    /// Starts a broker on `data_dir` with `extra` arguments, and waits for it to be ready.
    ///
    /// # Panics
    /// When it does not start within the deadline (with its log in the message).
    pub fn start(data_dir: &Path, extra: &[&str]) -> BrokerProcess {
        BrokerProcess::launch(data_dir, "127.0.0.1:0", extra).ready()
    }

    /// Starts a broker listening on `listen` without waiting for it: a test can talk to it
    /// while it starts.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn launch(data_dir: &Path, listen: &str, extra: &[&str]) -> StartingBroker {
        // Beside the test's files, not in the data directory (whose disk a test may fill).
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let stderr_log = std::env::temp_dir().join(format!(
            "weir-broker-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)
            .expect("broker log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir-broker-under-test"))
            .args([
                "--data-dir",
                &data_dir.display().to_string(),
                "--listen",
                listen,
                "--http-listen",
                "127.0.0.1:0",
                "--kafka-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start weir-broker");
        let ready = ready_lines(&mut child);
        StartingBroker {
            child,
            ready,
            stderr_log,
        }
    }
    /// Sends `signal` (`STOP`, `CONT`, ...) to the broker process.
    #[allow(
        dead_code,
        reason = "the cluster tests use it; they share this harness"
    )]
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    /// The broker's process id (while it runs).
    #[allow(
        dead_code,
        reason = "the broker tests use it; the other test binaries share this harness"
    )]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the broker with SIGKILL and waits for it to die.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (with a deadline) for the broker to exit; returns its exit code.
    ///
    /// # Panics
    /// When it has not exited within the deadline.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the broker did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the broker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// `GET path` on the broker's HTTP listener; returns the status line and the body.
    ///
    /// # Panics
    /// When the broker does not answer.
    pub fn http_get(&self, path: &str) -> (String, String) {
        http_get(&self.http_address, path)
    }
}

/// A broker process that has not said it is ready yet.
#[derive(Debug)]
pub struct StartingBroker {
    child: Child,
    ready: mpsc::Receiver<String>,
    stderr_log: PathBuf,
}

impl StartingBroker {
    /// Whether it has said it is ready (without waiting).
    #[allow(
        dead_code,
        reason = "the broker tests use it; the other test binaries share this harness"
    )]
    pub fn is_ready(&self) -> Option<String> {
        self.ready.try_recv().ok()
    }

    /// Waits for its ready line.
    ///
    /// # Panics
    /// When it does not come within the deadline (with the broker's log in the message).
    pub fn ready(self) -> BrokerProcess {
        let line = self.ready.recv_timeout(START_DEADLINE).ok();
        self.into_process(line)
    }

    /// The running broker, from the ready line [`StartingBroker::is_ready`] returned.
    ///
    /// # Panics
    /// As [`StartingBroker::ready`] when `line` is `None`.
    pub fn into_process(mut self, line: Option<String>) -> BrokerProcess {
        let Some(line) = line else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            panic!("the broker was not ready within {START_DEADLINE:?}; its log:\n{log}");
        };
        let field = |name: &str| ready_field(&line, name);
        BrokerProcess {
            address: field("grpc"),
            http_address: field("http"),
            kafka_address: field("kafka"),
            child: Some(self.child),
            stderr_log: self.stderr_log,
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

/// Runs `weir --bootstrap BROKER ARGS` with `stdin`, killing it past the deadline.
///
/// # Panics
/// When the command cannot start or runs past the deadline.
pub fn weir(broker: &str, args: &[&str], stdin: &str) -> Output {
    WeirProcess::spawn(broker, args, stdin.to_string()).finish(COMMAND_DEADLINE)
}

/// A loopback port free now (for a process that must come back on the same address).
#[allow(
    dead_code,
    reason = "the broker and cluster tests use it; the operator tests share this harness"
)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// Standard output of a successful command.
///
/// # Panics
/// When the command failed, with its stderr.
pub fn weir_ok(broker: &str, args: &[&str], stdin: &str) -> String {
    let output = weir(broker, args, stdin);
    assert!(
        output.status.success(),
        "weir {args:?} failed ({:?}): {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `GET path` on the HTTP server at `address`: the status line and the body.
///
/// # Panics
/// When the server does not answer.
pub fn http_get(address: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The `ready ...` line a Weir process prints on stdout once it serves, if it comes within
/// `deadline` (the child's stdout must be piped).
#[allow(
    dead_code,
    reason = "the cluster and operator tests use it; they share this harness"
)]
pub fn ready_line(child: &mut Child, deadline: Duration) -> Option<String> {
    ready_lines(child).recv_timeout(deadline).ok()
}

/// The `ready ...` lines a Weir process prints on stdout, as they come.
fn ready_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.starts_with("ready ") {
                let _ = sender.send(line);
            }
        }
    });
    receiver
}

/// The value of `name=` in a ready line (`ready grpc=ADDR http=ADDR`).
///
/// # Panics
/// When the line does not name it.
pub fn ready_field(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("the ready line {line:?} names no {name}"))
        .to_string()
}

/// A size-limited tmpfs mounted for one test (root only), unmounted when dropped: a disk
/// that fills up.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the broker tests use it; the other test binaries share this harness"
)]
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

#[allow(
    dead_code,
    reason = "the broker tests use it; the other test binaries share this harness"
)]
impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB. `None` where mounting is not allowed (not root), except
    /// in CI (`CI` set), where that is a failure.
    ///
    /// # Panics
    /// In CI, when the mount fails.
    pub fn mount(mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mkdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(SmallDisk { path, _dir: dir }),
            outcome => {
                let why = match outcome {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must be able to mount a tmpfs (run as root): {why}"
                );
                eprintln!("skipped: cannot mount a tmpfs here ({why})");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A `weir` command running in the background: its output is collected as it comes.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the broker tests use it; the other test binaries share this harness"
)]
pub struct WeirProcess {
    child: Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

#[allow(
    dead_code,
    reason = "the broker tests use it; the other test binaries share this harness"
)]
impl WeirProcess {
    /// Starts `weir --bootstrap BROKER ARGS` with `stdin` written to it (then closed).
    ///
    /// # Panics
    /// When the command cannot start.
    pub fn spawn(broker: &str, args: &[&str], stdin: String) -> WeirProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
            .arg("--bootstrap")
            .arg(broker)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir");
        let mut input = child.stdin.take().expect("piped stdin");
        std::thread::spawn(move || {
            let _ = input.write_all(stdin.as_bytes());
        });
        let collect = |mut from: Box<dyn Read + Send>| {
            let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = std::sync::Arc::clone(&bytes);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match from.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => sink
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend_from_slice(&chunk[..n]),
                    }
                }
            });
            bytes
        };
        let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
        WeirProcess {
            child,
            stdout,
            stderr,
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Sends `signal` (`INT`, `TERM`, ...).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits (up to `deadline`) for it to exit; its exit code.
    ///
    /// # Panics
    /// When it is still running at the deadline (it is killed first).
    pub fn wait(&mut self, deadline: Duration) -> Option<i32> {
        self.exit(deadline).code()
    }

    /// Waits (up to `deadline`) for it to exit; its status and everything it printed.
    ///
    /// # Panics
    /// As [`WeirProcess::wait`].
    pub fn finish(mut self, deadline: Duration) -> Output {
        let status = self.exit(deadline);
        let take = |bytes: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
            std::mem::take(&mut *bytes.lock().unwrap_or_else(|p| p.into_inner()))
        };
        Output {
            status,
            stdout: take(&self.stdout),
            stderr: take(&self.stderr),
        }
    }

    fn exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers take the last bytes.
                let settle = Instant::now() + Duration::from_secs(2);
                while Instant::now() < settle && readers_running(self) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("weir ran past {deadline:?}; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether the output readers still hold their buffers (their pipes are still open).
fn readers_running(process: &WeirProcess) -> bool {
    std::sync::Arc::strong_count(&process.stdout) > 1
        || std::sync::Arc::strong_count(&process.stderr) > 1
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The virtualenv `.ci/kafka-clients` makes with confluent-kafka. Missing outside CI: the
/// test is skipped.
pub fn confluent_python() -> Option<PathBuf> {
    let cache = std::env::var_os("WEIR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir")))?;
    let python = cache.join("confluent-kafka-2.16.1/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs confluent-kafka (.ci/kafka-clients); {} is missing",
            python.display()
        );
        eprintln!("skipped: no confluent-kafka here (.ci/kafka-clients installs it)");
        return None;
    }
    Some(python)
}

/// Node.js and the directory of kafkajs's modules (`.ci/kafka-clients` installs kafkajs
/// 2.2.4): `None` outside CI when missing (the test is skipped), a failure in CI.
pub fn kafkajs() -> Option<(PathBuf, PathBuf)> {
    let cache = std::env::var_os("WEIR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir")))?;
    let modules = cache.join("kafkajs-2.2.4/node_modules");
    let node = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("node"))
            .find(|node| node.exists())
    });
    match node {
        Some(node) if modules.join("kafkajs/package.json").exists() => Some((node, modules)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs Node.js and kafkajs (.ci/kafka-clients); {} is missing",
                modules.display()
            );
            eprintln!("skipped: no kafkajs here (.ci/kafka-clients installs it)");
            None
        }
    }
}

/// Runs `tests/kafka/SCRIPT ARGS...` with `python` for at most 180 s, and checks it succeeded;
/// its standard output.
///
/// # Panics
/// When it fails or runs out of time, with what it printed.
pub fn run_kafka_script(python: &Path, script: &str, args: &[&str]) -> String {
    run_kafka_client(Command::new(python), script, args)
}

/// Runs `tests/kafka/SCRIPT ARGS...` with `interpreter` as [`run_kafka_script`] does.
///
/// # Panics
/// When it fails or runs out of time, with what it printed.
pub fn run_kafka_client(mut interpreter: Command, script: &str, args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("kafka")
        .join(script);
    let child = interpreter
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let output = finish(child, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {args:?} failed: {stdout}{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Waits for `child` to exit, killed once `within` has passed; what it printed.
///
/// # Panics
/// When it cannot be waited for.
pub fn finish(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}
