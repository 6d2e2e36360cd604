//! `weir-broker`: parse the configuration, then serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use weir_broker::BrokerConfig;

#[derive(Parser)]
#[command(name = "weir-broker", version, about = "The Weir broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Subcommand)]
enum Command {
    /// One broker with everything it needs embedded, on 127.0.0.1:9192 (gRPC) and :9193
    /// (HTTP), data in ./weir-data: ready for the `weir` CLI with no other setup.
    Dev(Options),
}

#[derive(Args, Clone, Default)]
struct Options {
    /// A TOML config file; unknown keys are an error.
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Where partition logs and metadata live [default: ./weir-data].
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The gRPC listen address [default: 127.0.0.1:9192].
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// The HTTP listen address for /metrics, /healthz and /readyz [default: 127.0.0.1:9193].
    #[arg(long, env = "WEIR_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// The address clients are told to use [default: the listen address].
    #[arg(long, env = "WEIR_ADVERTISED_ADDRESS")]
    advertised_address: Option<String>,
    /// The broker's id, unique in the cluster.
    #[arg(long = "id", alias = "broker-id", env = "WEIR_BROKER_ID")]
    broker_id: Option<i32>,
    /// The controller's address (`host:port`), or several separated by commas (tried in
    /// turn); without it the broker embeds its own.
    #[arg(long, env = "WEIR_CONTROLLER")]
    controller: Option<String>,
    /// The cluster this broker belongs to (`namespace/name`), for an operator's controller.
    #[arg(long, env = "WEIR_CLUSTER")]
    cluster: Option<String>,
    /// The rack (or zone) the broker is in: replicas of a partition go to different racks.
    #[arg(long, env = "WEIR_RACK")]
    rack: Option<String>,
    /// A follower that has not caught up for this long leaves the ISR [default: 10s].
    #[arg(long, env = "WEIR_REPLICA_LAG_TIME_MAX", value_parser = humantime::parse_duration)]
    replica_lag_time_max: Option<std::time::Duration>,
}

impl Options {
    fn config(self) -> anyhow::Result<BrokerConfig> {
        let mut config = match &self.config {
            Some(path) => BrokerConfig::from_file(path)?,
            None => BrokerConfig::default(),
        };
        if let Some(data_dir) = self.data_dir {
            config.data_dir = data_dir;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(http_listen) = self.http_listen {
            config.http_listen = http_listen;
        }
        if let Some(advertised) = self.advertised_address {
            config.advertised_address = Some(advertised);
        }
        if let Some(id) = self.broker_id {
            config.broker_id = id;
        }
        if let Some(controller) = self.controller {
            config.controller = Some(controller);
        }
        if let Some(cluster) = self.cluster {
            config.cluster = Some(cluster);
        }
        if let Some(rack) = self.rack {
            config.rack = Some(rack);
        }
        if let Some(lag) = self.replica_lag_time_max {
            config.replica_lag_time_max = lag;
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = match cli.command {
        Some(Command::Dev(options)) => options,
        None => cli.options,
    };
    let config = match options.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("weir-broker: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir-broker: start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weir_broker::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop the broker with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}
