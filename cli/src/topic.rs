//! `weir topic …`

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use weir_client::Client;
use weir_proto::v1;

use crate::{Output, key_value};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions [default: the broker's default_partitions].
        #[arg(long, default_value_t = 0)]
        partitions: i32,
        /// Replicas of each partition [default: the broker's default_replication_factor].
        #[arg(long, default_value_t = 0)]
        replication_factor: i32,
        /// A topic config, Kafka's keys: --config retention.ms=3600000 (repeatable).
        #[arg(long = "config", value_parser = key_value)]
        config: Vec<(String, String)>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List topics.
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Describe a topic: partitions with leader, replicas, ISR and offsets; its config.
    Describe {
        name: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Change a topic's config or raise its partition count.
    Alter {
        name: String,
        #[arg(long = "config", value_parser = key_value)]
        config: Vec<(String, String)>,
        /// Return a key to the broker's default (repeatable).
        #[arg(long = "delete-config")]
        delete_config: Vec<String>,
        /// The new, larger partition count.
        #[arg(long)]
        partitions: Option<i32>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

#[derive(Args)]
pub struct OutputArg {
    /// text (a table for people) or json (for scripts).
    #[arg(long = "format", alias = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub async fn run(client: &Client, command: TopicCommand) -> anyhow::Result<ExitCode> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            config,
            output,
        } => {
            let topic = client
                .create_topic(
                    &name,
                    partitions,
                    replication_factor,
                    config.into_iter().collect(),
                )
                .await?;
            print_topic(&topic, output.output)?;
        }
        TopicCommand::List { output } => {
            let topics = client.list_topics().await?;
            match output.output {
                Output::Json => outln!(
                    "{}",
                    json!(topics.iter().map(topic_json).collect::<Vec<_>>())
                ),
                Output::Text => {
                    outln!("{:<40} {:>10} {:>12}", "TOPIC", "PARTITIONS", "RECORDS");
                    for topic in &topics {
                        let records: i64 = topic
                            .partitions
                            .iter()
                            .map(|p| p.log_end_offset - p.log_start_offset)
                            .sum();
                        outln!(
                            "{:<40} {:>10} {:>12}",
                            topic.name,
                            topic.partitions.len(),
                            records
                        );
                    }
                }
            }
        }
        TopicCommand::Describe { name, output } => {
            print_topic(&client.describe_topic(&name).await?, output.output)?
        }
        TopicCommand::Alter {
            name,
            config,
            delete_config,
            partitions,
            output,
        } => {
            if config.is_empty() && delete_config.is_empty() && partitions.is_none() {
                eprintln!(
                    "weir: nothing to change: give --config, --delete-config or --partitions"
                );
                return Ok(ExitCode::from(2));
            }
            let mut topic = None;
            if !config.is_empty() || !delete_config.is_empty() {
                let set: BTreeMap<String, String> = config.into_iter().collect();
                topic = Some(client.alter_topic_config(&name, set, delete_config).await?);
            }
            if let Some(partitions) = partitions {
                topic = Some(client.add_partitions(&name, partitions).await?);
            }
            if let Some(topic) = topic {
                print_topic(&topic, output.output)?;
            }
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            eprintln!("deleted topic {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn topic_json(topic: &v1::TopicDescription) -> serde_json::Value {
    let config: BTreeMap<&String, &String> = topic.config.iter().collect();
    json!({
        "name": topic.name,
        "partitions": topic.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": p.leader,
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
            "log_start_offset": p.log_start_offset,
            "log_end_offset": p.log_end_offset,
            "high_watermark": p.high_watermark,
            "size_bytes": p.size_bytes,
            "adding": p.adding,
            "removing": p.removing,
        })).collect::<Vec<_>>(),
        "config": config,
        "unapplied_config": topic.unapplied_config.iter().collect::<BTreeMap<_, _>>(),
    })
}

fn print_topic(topic: &v1::TopicDescription, output: Output) -> std::io::Result<()> {
    match output {
        Output::Json => outln!("{}", topic_json(topic)),
        Output::Text => {
            outln!(
                "topic {} ({} partitions)",
                topic.name,
                topic.partitions.len()
            );
            outln!(
                "{:>9} {:>6} {:>10} {:>10} {:>14} {:>14} {:>14} {:>12}",
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "START",
                "END",
                "HIGH WATER",
                "BYTES"
            );
            let list = |ids: &[i32]| {
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for p in &topic.partitions {
                outln!(
                    "{:>9} {:>6} {:>10} {:>10} {:>14} {:>14} {:>14} {:>12}",
                    p.partition,
                    p.leader,
                    list(&p.replicas),
                    list(&p.isr),
                    p.log_start_offset,
                    p.log_end_offset,
                    p.high_watermark,
                    p.size_bytes
                );
                if !p.adding.is_empty() || !p.removing.is_empty() {
                    outln!(
                        "{:>9} moving: adding {} (catching up), then removing {}",
                        "",
                        list(&p.adding),
                        list(&p.removing)
                    );
                }
            }
            let config: BTreeMap<&String, &String> = topic.config.iter().collect();
            outln!("config:");
            for (key, value) in config {
                outln!("  {key}={value}");
            }
            // Overrides the answering broker could not apply: their defaults stand.
            let unapplied: BTreeMap<&String, &String> = topic.unapplied_config.iter().collect();
            if !unapplied.is_empty() {
                outln!("not applied (the default stands):");
                for (key, why) in unapplied {
                    outln!("  {key}: {why}");
                }
            }
        }
    }
    Ok(())
}
