//! `weir group …`

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use weir_client::Client;
use weir_proto::v1;

use crate::Output;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first record at or after --timestamp.
    Timestamp,
    /// --offset, in every partition (clamped to the log's range).
    Offset,
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List {
        /// text (a table for people) or json (for scripts).
        #[arg(long = "format", alias = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// A group's state, members, and per partition its committed offset, end and lag.
    Describe {
        group: String,
        /// text (a table for people) or json (for scripts).
        #[arg(long = "format", alias = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete a group without members, and its committed offsets.
    Delete { group: String },
    /// Move a group's committed offsets of a topic (the group must have no members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, value_enum)]
        to: ResetTo,
        /// Milliseconds since the Unix epoch, with --to timestamp.
        #[arg(long, required_if_eq("to", "timestamp"))]
        timestamp: Option<i64>,
        /// The offset, with --to offset.
        #[arg(long, required_if_eq("to", "offset"))]
        offset: Option<i64>,
    },
}

pub async fn run(client: &Client, command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::List { output } => {
            let groups = client.list_groups().await?;
            match output {
                Output::Json => outln!(
                    "{}",
                    json!(groups.iter().map(|g| json!({"group": g.group_id, "state": g.state, "members": g.members})).collect::<Vec<_>>())
                ),
                Output::Text => {
                    outln!("{:<40} {:<12} {:>8}", "GROUP", "STATE", "MEMBERS");
                    for g in groups {
                        outln!("{:<40} {:<12} {:>8}", g.group_id, g.state, g.members);
                    }
                }
            }
        }
        GroupCommand::Describe { group, output } => {
            let description = client.describe_group(&group).await?;
            match output {
                Output::Json => outln!("{}", group_json(&description)),
                Output::Text => print_group(&description)?,
            }
        }
        GroupCommand::Delete { group } => {
            client.delete_group(&group).await?;
            eprintln!("deleted group {group}");
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to,
            timestamp,
            offset,
        } => {
            let spec = match to {
                ResetTo::Earliest => v1::OffsetSpec::Earliest,
                ResetTo::Latest | ResetTo::Offset => v1::OffsetSpec::Latest,
                ResetTo::Timestamp => v1::OffsetSpec::Timestamp,
            };
            let offset = if matches!(to, ResetTo::Offset) {
                offset
            } else {
                None
            };
            client
                .reset_group_offsets(&group, &topic, spec, timestamp.unwrap_or(0), offset)
                .await?;
            let description = client.describe_group(&group).await?;
            print_group(&description)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn group_json(g: &v1::GroupDescription) -> serde_json::Value {
    json!({
        "group": g.group_id,
        "state": g.state,
        "group_epoch": g.group_epoch,
        "members": g.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "member_epoch": m.member_epoch,
            "topics": m.topics,
            "assignment": m.assignment.iter().map(|a| json!({"topic": a.topic, "partitions": a.partitions})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "partitions": g.partitions.iter().map(|p| json!({
            "topic": p.topic,
            "partition": p.partition,
            "committed_offset": p.committed_offset,
            "log_end_offset": p.log_end_offset,
            "lag": p.lag,
        })).collect::<Vec<_>>(),
    })
}

fn print_group(g: &v1::GroupDescription) -> std::io::Result<()> {
    outln!(
        "group {} ({}, epoch {}, {} members)",
        g.group_id,
        g.state,
        g.group_epoch,
        g.members.len()
    );
    for m in &g.members {
        let assignment: Vec<String> = m
            .assignment
            .iter()
            .map(|a| {
                format!(
                    "{}:{}",
                    a.topic,
                    a.partitions
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        outln!(
            "  member {} epoch {} owns {}",
            m.member_id,
            m.member_epoch,
            assignment.join(" ")
        );
    }
    outln!(
        "{:<30} {:>9} {:>14} {:>14} {:>10}",
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "END",
        "LAG"
    );
    for p in &g.partitions {
        let committed = p
            .committed_offset
            .map_or("-".to_string(), |o| o.to_string());
        outln!(
            "{:<30} {:>9} {:>14} {:>14} {:>10}",
            p.topic,
            p.partition,
            committed,
            p.log_end_offset,
            p.lag
        );
    }
    Ok(())
}
