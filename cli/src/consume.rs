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
    let mut source = match &args.group {
        Some(group) => {
            let config = GroupConfig {
                reset: start,
                max_wait,
                ..GroupConfig::default()
            };
            Source::Group(Box::new(
                GroupConsumer::join(client.clone(), group, &[&args.topic], config).await?,
            ))
        }
        None => {
            let config = ConsumerConfig {
                max_wait,
                ..ConsumerConfig::default()
            };
            let partitions = args.partition.map(|p| vec![p]);
            Source::Alone(Box::new(
                Consumer::assign(client.clone(), &args.topic, partitions, start, config).await?,
            ))
        }
    };
    let (mut printed, mut last_record) = (0u64, Instant::now());
    let mut stdout = std::io::stdout().lock();
    // Ctrl-C or SIGTERM ends the loop between polls: a group member then commits what it
    // printed and leaves its group, so its partitions move at once.
    let mut interrupted = std::pin::pin!(crate::interrupted());
    while args.max_messages.is_none_or(|max| printed < max)
        && args.timeout.is_none_or(|t| last_record.elapsed() < t)
    {
        let left = args
            .max_messages
            .map_or(usize::MAX, |max| (max - printed) as usize);
        let records = tokio::select! {
            records = source.poll(left) => records?,
            () = &mut interrupted => break,
        };
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for record in records.iter().take(left) {
            print(&mut stdout, record, args.format)?;
            printed += 1;
        }
        stdout.flush()?;
    }
    if let Source::Group(consumer) = source {
        (*consumer).close().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where records come from: partitions read alone, or a group's assignment.
enum Source {
    Alone(Box<Consumer>),
    Group(Box<GroupConsumer>),
}

impl Source {
    /// Up to `limit` records: a group member's position (and so its commit) moves only past
    /// what it returns, so only what is printed is committed.
    async fn poll(
        &mut self,
        limit: usize,
    ) -> Result<Vec<ConsumedRecord>, weir_client::ClientError> {
        match self {
            Source::Alone(consumer) => consumer.poll().await,
            Source::Group(consumer) => consumer.poll_up_to(limit).await,
        }
    }
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
