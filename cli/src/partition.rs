//! `weir partition …` and `weir cluster …`: moving partitions between brokers.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::json;
use weir_client::Client;
use weir_controller::rebalance::{Placed, plan};
use weir_proto::v1;

use crate::Output;
use crate::topic::OutputArg;

#[derive(Subcommand)]
pub enum PartitionCommand {
    /// Move a partition to new replicas while it serves (the first is its preferred leader):
    /// new replicas catch up as followers, then the partition drops the ones it leaves.
    Reassign {
        topic: String,
        #[arg(long)]
        partition: i32,
        /// The broker ids, comma-separated: --replicas 1,2,4.
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
        replicas: Vec<i32>,
        /// Cancel the partition's move under way instead (it keeps the replicas it had).
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
        /// Wait until the move completes, showing its progress.
        #[arg(long)]
        wait: bool,
    },
    /// The reassignments under way.
    Reassignments {
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Even out replicas and preferred leaders over the brokers (and racks), showing the plan
    /// first; with --drain, move every replica off those brokers (before removing them).
    Rebalance {
        /// Show the plan only.
        #[arg(long)]
        dry_run: bool,
        /// Brokers to empty, comma-separated.
        #[arg(long, value_delimiter = ',')]
        drain: Vec<i32>,
        /// Wait until every move completes, showing progress.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// How long `--wait` waits for moves before giving up (they go on without it).
const WAIT_LIMIT: Duration = Duration::from_secs(3600);

pub async fn run(client: &Client, command: PartitionCommand) -> anyhow::Result<ExitCode> {
    match command {
        PartitionCommand::Reassign {
            topic,
            partition,
            replicas,
            cancel,
            wait,
        } => {
            let replicas = if cancel { Vec::new() } else { replicas };
            let results = client
                .alter_reassignments(vec![v1::PartitionReassignment {
                    topic: topic.clone(),
                    partition,
                    replicas: replicas.clone(),
                }])
                .await?;
            if let Some(refused) = results.iter().find(|r| !r.error.is_empty()) {
                eprintln!("error: {}", refused.error);
                return Ok(ExitCode::from(1));
            }
            if cancel {
                eprintln!("cancelled the move of {topic}-{partition}");
            } else {
                eprintln!("moving {topic}-{partition} to replicas {replicas:?}");
            }
            if wait {
                return wait_for_moves(client).await;
            }
        }
        PartitionCommand::Reassignments { output } => {
            let moves = client.list_reassignments().await?;
            print_moves(&moves, output.output)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_cluster(client: &Client, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Rebalance {
        dry_run,
        drain,
        wait,
        output,
    } = command;
    let metadata = client.cluster_metadata().await?;
    let brokers: Vec<(i32, Option<String>)> = metadata
        .brokers
        .iter()
        .map(|b| (b.id, b.rack.clone()))
        .collect();
    if let Some(unknown) = drain
        .iter()
        .find(|d| !brokers.iter().any(|(id, _)| id == *d))
    {
        eprintln!("error: broker {unknown} is not in the cluster");
        return Ok(ExitCode::from(2));
    }
    let placed: Vec<Placed> = metadata
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Placed {
                topic: t.name.clone(),
                partition: p.partition,
                // A move under way counts where it goes.
                replicas: p
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !p.removing.contains(r))
                    .collect(),
            })
        })
        .collect();
    let moves = match plan(&brokers, &drain, &placed) {
        Ok(moves) => moves,
        Err(why) => {
            eprintln!("error: no plan: {why}");
            return Ok(ExitCode::from(1));
        }
    };
    match output.output {
        Output::Json => outln!(
            "{}",
            json!(
                moves
                    .iter()
                    .map(|m| json!({
                        "topic": m.topic,
                        "partition": m.partition,
                        "from": placed.iter().find(|p| p.topic == m.topic && p.partition == m.partition).map(|p| p.replicas.clone()),
                        "to": m.replicas,
                    }))
                    .collect::<Vec<_>>()
            )
        ),
        Output::Text => {
            outln!("{:<40} {:>9} {:>14} {:>14}", "TOPIC", "PARTITION", "FROM", "TO");
            for m in &moves {
                let from = placed
                    .iter()
                    .find(|p| p.topic == m.topic && p.partition == m.partition)
                    .map(|p| list(&p.replicas))
                    .unwrap_or_default();
                outln!(
                    "{:<40} {:>9} {:>14} {:>14}",
                    m.topic,
                    m.partition,
                    from,
                    list(&m.replicas)
                );
            }
        }
    }
    eprintln!(
        "{} of {} partitions move{}",
        moves.len(),
        placed.len(),
        if dry_run {
            " (dry run: nothing done)"
        } else {
            ""
        }
    );
    if dry_run || moves.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let results = client
        .alter_reassignments(
            moves
                .iter()
                .map(|m| v1::PartitionReassignment {
                    topic: m.topic.clone(),
                    partition: m.partition,
                    replicas: m.replicas.clone(),
                })
                .collect(),
        )
        .await?;
    let refused: Vec<_> = results.iter().filter(|r| !r.error.is_empty()).collect();
    for r in &refused {
        eprintln!("error: {}-{}: {}", r.topic, r.partition, r.error);
    }
    if !refused.is_empty() {
        return Ok(ExitCode::from(1));
    }
    if wait {
        return wait_for_moves(client).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until no reassignment is under way, saying how many are left as they finish.
async fn wait_for_moves(client: &Client) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut last = usize::MAX;
    loop {
        let moves = client.list_reassignments().await?;
        if moves.is_empty() {
            eprintln!("every move done in {:.1}s", started.elapsed().as_secs_f64());
            return Ok(ExitCode::SUCCESS);
        }
        if moves.len() != last {
            eprintln!("{} partitions still moving", moves.len());
            last = moves.len();
        }
        if started.elapsed() > WAIT_LIMIT {
            eprintln!(
                "error: moves still under way after {WAIT_LIMIT:?}; they go on (see `weir partition reassignments`)"
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn list(ids: &[i32]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn print_moves(moves: &[v1::ReassignmentStatus], output: Output) -> std::io::Result<()> {
    match output {
        Output::Json => outln!(
            "{}",
            json!(
                moves
                    .iter()
                    .map(|m| json!({
                        "topic": m.topic, "partition": m.partition, "target": m.target,
                        "adding": m.adding, "removing": m.removing, "isr": m.isr,
                    }))
                    .collect::<Vec<_>>()
            )
        ),
        Output::Text => {
            outln!(
                "{:<40} {:>9} {:>12} {:>10} {:>10} {:>10}",
                "TOPIC",
                "PARTITION",
                "TARGET",
                "ADDING",
                "REMOVING",
                "ISR"
            );
            for m in moves {
                outln!(
                    "{:<40} {:>9} {:>12} {:>10} {:>10} {:>10}",
                    m.topic,
                    m.partition,
                    list(&m.target),
                    list(&m.adding),
                    list(&m.removing),
                    list(&m.isr)
                );
            }
        }
    }
    Ok(())
}
