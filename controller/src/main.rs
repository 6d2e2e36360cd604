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
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
    let timing = weir_controller::server::Timing {
        heartbeat_interval: args.heartbeat_interval,
        session_timeout: args.session_timeout,
        takeover_grace: std::time::Duration::ZERO,
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
    weir_controller::server::serve(store, timing, listener, shutdown).await
}
