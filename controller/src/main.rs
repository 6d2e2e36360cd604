//! `weir-controller`: the standalone controller, for clusters outside Kubernetes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Weir's controller: the cluster's metadata, partition placement, leader election and ISR
/// changes. Brokers reach it with `--controller ADDR`.
#[derive(Parser, Debug)]
#[command(name = "weir-controller", version)]
struct Args {
    /// Where the metadata is kept.
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "./weir-controller-data")]
    data_dir: PathBuf,
    /// The gRPC address to listen on.
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:9190")]
    listen: SocketAddr,
    /// How often brokers heartbeat.
    #[arg(long, env = "WEIR_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, default_value = "500ms")]
    heartbeat_interval: Duration,
    /// A broker without a heartbeat for this long is dead, and its partitions get new leaders.
    #[arg(long, env = "WEIR_SESSION_TIMEOUT", value_parser = humantime::parse_duration, default_value = "3s")]
    session_timeout: Duration,
    /// How often leadership moves back to preferred replicas that are in sync again
    /// (Kafka's auto.leader.rebalance.enable); 0 turns it off.
    #[arg(long, env = "WEIR_LEADER_REBALANCE_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    leader_rebalance_interval: Duration,
    /// The share (0 to 1) of a broker's preferred partitions led elsewhere that starts the
    /// move (Kafka's leader.imbalance.per.broker.percentage / 100).
    #[arg(long, env = "WEIR_LEADER_IMBALANCE_THRESHOLD", default_value_t = 0.1)]
    leader_imbalance_threshold: f64,
    /// A file holding the cluster secret brokers must present (give them the same file).
    /// Without it, one is made at `<data-dir>/cluster-secret` on first start and kept.
    #[arg(long, env = "WEIR_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
}

/// The secret of `--cluster-secret-file`, or the one kept in the data directory (made on
/// first start, readable by its owner only).
fn cluster_secret(args: &Args) -> anyhow::Result<weir_proto::ClusterSecret> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(path) = &args.cluster_secret_file {
        return Ok(weir_proto::ClusterSecret::read(path)?);
    }
    let path = args.data_dir.join("cluster-secret");
    if path.exists() {
        return Ok(weir_proto::ClusterSecret::read(&path)?);
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let secret = weir_proto::ClusterSecret::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("create {}: {e}", path.display()))?;
    writeln!(file, "{}", secret.expose())?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "made the cluster secret: give brokers this file (--cluster-secret-file)");
    Ok(secret)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.session_timeout <= args.heartbeat_interval {
        anyhow::bail!(
            "--session-timeout ({:?}) must be longer than --heartbeat-interval ({:?})",
            args.session_timeout,
            args.heartbeat_interval
        );
    }
    let store = weir_controller::FileStore::open(&args.data_dir)?;
    let secret = cluster_secret(&args)?;
    let timing = weir_controller::server::Timing {
        heartbeat_interval: args.heartbeat_interval,
        session_timeout: args.session_timeout,
        takeover_grace: std::time::Duration::ZERO,
        leader_rebalance_interval: (!args.leader_rebalance_interval.is_zero())
            .then_some(args.leader_rebalance_interval),
        leader_imbalance_threshold: args.leader_imbalance_threshold,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen on {}: {e}", args.listen))?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    weir_controller::server::serve(store, timing, listener, secret, shutdown).await
}
