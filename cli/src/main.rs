//! `weir`: the command-line interface to Weir. Scriptable like kcat: tables for people,
//! `--output json` for scripts; exit code 0 on success, 1 on failure, 2 on usage errors, with
//! one line on stderr.

/// `println!` that returns the write's error instead of panicking, so that a closed pipe
/// (`weir topic list | head -1`) ends the command quietly rather than with a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod bench;
mod bench_kafka;
mod consume;
mod format;
mod group;
mod partition;
mod produce;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use weir_client::Client;

/// The dev broker's address, the default bootstrap.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9192";

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Produce, consume and manage topics on a Weir cluster"
)]
struct Cli {
    /// A broker to talk to.
    #[arg(long, global = true, env = "WEIR_BOOTSTRAP", default_value = DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// How long a call keeps trying while a broker restarts or a leader moves (Kafka's
    /// default.api.timeout.ms); what it waits for is said on stderr.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "60s")]
    api_timeout: std::time::Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// List and describe consumer groups, and reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Move a partition to other brokers, or list the moves under way.
    #[command(subcommand)]
    Partition(partition::PartitionCommand),
    /// Cluster-wide operations: rebalance replicas and leaders over the brokers.
    #[command(subcommand)]
    Cluster(partition::ClusterCommand),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // What the client waits for while it retries (a broker restarting, a leader moving).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "weir_client::retry=warn",
        ))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_level(false)
        .without_time()
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir: start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing more to say to anyone.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = weir_client::ClientConfig {
        retry: weir_client::RetryPolicy::default().with_deadline(cli.api_timeout),
    };
    // Kafka's protocol only: no Weir endpoint needed.
    if let Command::Bench(bench::BenchCommand::Kafka(args)) = cli.command {
        return bench_kafka::run(args).await;
    }
    let client = Client::connect_with(&cli.bootstrap, config).await?;
    match cli.command {
        Command::Topic(command) => topic::run(&client, command).await,
        Command::Produce(args) => produce::run(&client, args).await,
        Command::Consume(args) => consume::run(&client, args).await,
        Command::Group(command) => group::run(&client, command).await,
        Command::Bench(command) => bench::run(&client, command).await,
        Command::Partition(command) => partition::run(&client, command).await,
        Command::Cluster(command) => partition::run_cluster(&client, command).await,
    }
}

/// An error and its causes on one line.
fn one_line(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

/// Completes on SIGINT or SIGTERM (never, where signals cannot be listened to).
pub async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// Parses `key=value`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

/// Keeps `done` items since `started` at `rate` a second: sleeps only once a millisecond or
/// more ahead, since the timer cannot sleep for less (sleeping per item would cap the rate
/// near a thousand a second).
pub async fn pace(started: std::time::Instant, done: u64, rate: f64) {
    let due = started + std::time::Duration::from_secs_f64(done as f64 / rate);
    if due > std::time::Instant::now() + std::time::Duration::from_millis(1) {
        tokio::time::sleep_until(due.into()).await;
    }
}
