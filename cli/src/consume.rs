//! `weir consume TOPIC`: print records as text (the value per line) or JSON (one object per
//! record).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::json;
use weir_client::{
    Client, ConsumedRecord, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, StartAt,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Read as a member of this consumer group: the group assigns partitions and the
    /// consumer commits what it printed (then --from-beginning applies only where the group
    /// has no offset yet).
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    group: Option<String>,
    /// Read only this partition [default: all].
    #[arg(long)]
    partition: Option<i32>,
    /// Start at the earliest record [default: only new records].
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long)]
    offset: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this long without a new record (e.g. 5s, 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub async fn run(client: &Client, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let start = match (args.from_beginning, args.offset) {
        (true, _) => StartAt::Earliest,
        (_, Some(offset)) => StartAt::Offset(offset),
        _ => StartAt::Latest,
    };
    let max_wait = args.timeout.map_or(Duration::from_millis(500), |t| {
        t.min(Duration::from_millis(500))
    });
    if let Some(group) = &args.group {
        return run_in_group(client, &args, group, start, max_wait).await;
    }
    let config = ConsumerConfig {
        max_wait,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::assign(
        client.clone(),
        &args.topic,
        args.partition.map(|p| vec![p]),
        start,
        config,
    )
    .await?;
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let mut stdout = std::io::stdout().lock();
    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        if args.timeout.is_some_and(|t| last_record.elapsed() >= t) {
            break;
        }
        let records = consumer.poll().await?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for record in records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            print(&mut stdout, &record, args.format)?;
            printed += 1;
        }
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one record in the chosen format.
fn print(out: &mut impl Write, record: &ConsumedRecord, format: Format) -> std::io::Result<()> {
    match format {
        Format::Text => {
            out.write_all(record.value.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::Json => writeln!(out, "{}", record_json(record)),
    }
}

async fn run_in_group(
    client: &Client,
    args: &ConsumeArgs,
    group: &str,
    start: StartAt,
    max_wait: Duration,
) -> anyhow::Result<ExitCode> {
    let config = GroupConfig {
        reset: start,
        max_wait,
        ..GroupConfig::default()
    };
    let mut consumer = GroupConsumer::join(client.clone(), group, &[&args.topic], config).await?;
    let (mut printed, mut last_record) = (0u64, Instant::now());
    let mut stdout = std::io::stdout().lock();
    while args.max_messages.is_none_or(|max| printed < max)
        && args.timeout.is_none_or(|t| last_record.elapsed() < t)
    {
        // Only what is printed is consumed, so only that is committed.
        let left = args
            .max_messages
            .map_or(usize::MAX, |max| (max - printed) as usize);
        let records = consumer.poll_up_to(left).await?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for record in records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            print(&mut stdout, &record, args.format)?;
            printed += 1;
        }
        stdout.flush()?;
    }
    consumer.close().await?;
    Ok(ExitCode::SUCCESS)
}

fn text(bytes: Option<&[u8]>) -> serde_json::Value {
    bytes.map_or(serde_json::Value::Null, |b| {
        serde_json::Value::String(String::from_utf8_lossy(b).into_owned())
    })
}

fn record_json(record: &ConsumedRecord) -> serde_json::Value {
    let headers: BTreeMap<&str, serde_json::Value> = record
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), text(v.as_deref())))
        .collect();
    json!({
        "topic": &*record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": text(record.key.as_deref()),
        "value": text(record.value.as_deref()),
        "headers": headers,
    })
}
