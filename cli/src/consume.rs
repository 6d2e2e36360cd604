//! `weir consume TOPIC`: print records: the value per delimiter, JSON, or a template (see
//! [`crate::format`]).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use weir_client::{
    Client, ConsumedRecord, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, StartAt,
};

use crate::format::{Delimiter, Printer, RecordFormat, ValueFormat, delimiter};

/// Where reading starts, as `--offset` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    /// This offset in every partition read.
    At(i64),
    /// This many records before the end of each partition.
    FromEnd(u64),
}

fn start(text: &str) -> Result<Start, String> {
    match text {
        "beginning" | "earliest" => Ok(Start::Beginning),
        "end" | "latest" => Ok(Start::End),
        _ => match text.parse::<i64>() {
            Ok(n) if n < 0 => Ok(Start::FromEnd(n.unsigned_abs())),
            Ok(n) => Ok(Start::At(n)),
            Err(_) => Err(format!(
                "{text:?} is not an offset: beginning, end, a number, or -N for N before the end"
            )),
        },
    }
}

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Read as a member of this consumer group: the group assigns partitions and the
    /// consumer commits what it printed (then --from-beginning applies only where the group
    /// has no offset yet). Ctrl-C commits and leaves the group.
    #[arg(long, conflicts_with_all = ["partition", "offset", "from_timestamp"])]
    group: Option<String>,
    /// Read only these partitions (repeatable) [default: all].
    #[arg(long)]
    partition: Vec<i32>,
    /// Start at the earliest record [default: only new records].
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    from_beginning: bool,
    /// Where to start in every partition read: beginning, end, an offset, or -N (N records
    /// before the end).
    #[arg(long, value_parser = start, allow_hyphen_values = true)]
    offset: Option<Start>,
    /// Start at the first record at or after this time (milliseconds since the Unix epoch).
    #[arg(long, conflicts_with = "offset")]
    from_timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this long without a new record (e.g. 5s, 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// text (the value), json (one object per record), or a template:
    /// '%t %p %o %T %k %v %h %K %S', with \n \t escapes.
    #[arg(long, alias = "output", value_parser = RecordFormat::parse, default_value = "text")]
    format: RecordFormat,
    /// How keys, values and header values are printed: raw bytes, or base64.
    #[arg(long, value_enum, default_value_t = ValueFormat::Raw)]
    value_format: ValueFormat,
    /// What follows each record in text output (\n, \0, any string).
    #[arg(long, value_parser = delimiter, default_value = "\\n")]
    delimiter: Delimiter,
    /// What a null key or value prints as in text and templates [default: nothing].
    #[arg(long, default_value = "")]
    null: String,
}

pub async fn run(client: &Client, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let start = match (args.from_beginning, args.offset, args.from_timestamp) {
        (true, _, _) | (_, Some(Start::Beginning), _) => StartAt::Earliest,
        (_, Some(Start::At(offset)), _) => StartAt::Offset(offset),
        (_, Some(Start::FromEnd(back)), _) => StartAt::FromEnd(back),
        (_, _, Some(timestamp)) => StartAt::Timestamp(timestamp),
        (_, Some(Start::End), _) | (_, None, None) => StartAt::Latest,
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
            let partitions = (!args.partition.is_empty()).then(|| args.partition.clone());
            Source::Alone(Box::new(
                Consumer::assign(client.clone(), &args.topic, partitions, start, config).await?,
            ))
        }
    };
    let printer = Printer {
        format: args.format.clone(),
        values: args.value_format,
        delimiter: args.delimiter.0.clone(),
        null: args.null.clone().into_bytes(),
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
            printer.print(&mut stdout, record)?;
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
