//! `weir produce TOPIC`: one record per delimiter (a line by default) of standard input, as
//! raw bytes or base64, with a key before a separator, a marker for null keys and values, and
//! a delivery report per record on request.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use tokio::io::AsyncBufReadExt;
use weir_client::{Acks, Client, Producer, ProducerConfig, ProducerRecord};

use crate::format::{Delimiter, ValueFormat, delimiter};
use crate::{Output, key_value};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AcksArg {
    #[value(name = "0")]
    None,
    #[value(name = "1")]
    Leader,
    #[value(name = "all")]
    All,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Acks {
        match acks {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// Split each record at the first SEP into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Send every record to this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// When a record counts as written: 0 (not waited for), 1 (the leader has it) or all
    /// (every in-sync replica has it), Kafka's producer default.
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    /// How long a record may take to be acknowledged, retries included, while brokers
    /// restart or leaders move (Kafka's delivery.timeout.ms).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    delivery_timeout: std::time::Duration,
    /// A header on every record: --header k=v (repeatable).
    #[arg(long = "header", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// At most this many records per second.
    #[arg(long)]
    rate: Option<u64>,
    /// What ends each record in the input (\n, \0, any string).
    #[arg(long, value_parser = delimiter, default_value = "\\n")]
    delimiter: Delimiter,
    /// How keys and values are given: raw bytes, or base64 (binary-safe).
    #[arg(long, value_enum, default_value_t = ValueFormat::Raw)]
    value_format: ValueFormat,
    /// A key or value equal to this is produced as null (a key-only record, a tombstone).
    #[arg(long)]
    null: Option<String>,
    /// Print a delivery report per record on stdout: partition and offset, or the error.
    #[arg(long)]
    report: bool,
    /// How reports are printed.
    #[arg(long, alias = "output", value_enum, default_value_t = Output::Text)]
    format: Output,
}

/// One record's fields from its input bytes.
fn fields(args: &ProduceArgs, input: &[u8]) -> Result<(Option<Bytes>, Option<Bytes>), String> {
    let (key, value) = match &args.key_separator {
        Some(separator) => match find(input, separator.as_bytes()) {
            Some(at) => (Some(&input[..at]), &input[at + separator.len()..]),
            None => (None, input),
        },
        None => (None, input),
    };
    let field = |bytes: &[u8]| -> Result<Option<Bytes>, String> {
        if args.null.as_deref().is_some_and(|n| n.as_bytes() == bytes) {
            return Ok(None);
        }
        args.value_format
            .decode(bytes)
            .map(|b| Some(Bytes::from(b)))
    };
    Ok((key.map(field).transpose()?.flatten(), field(value)?))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads the input one record at a time, whatever its bytes.
struct Records<R> {
    input: R,
    delimiter: Vec<u8>,
}

impl<R: tokio::io::AsyncBufRead + Unpin> Records<R> {
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let last = *self.delimiter.last().expect("a delimiter is not empty");
        let mut record = Vec::new();
        loop {
            let read = self.input.read_until(last, &mut record).await?;
            if read == 0 {
                return Ok((!record.is_empty()).then_some(record));
            }
            if record.ends_with(&self.delimiter) {
                record.truncate(record.len() - self.delimiter.len());
                return Ok(Some(record));
            }
        }
    }
}

/// A record's outcome, in input order.
enum Report {
    Delivered(weir_client::Delivery),
    Refused(String),
}

pub async fn run(client: &Client, args: ProduceArgs) -> anyhow::Result<ExitCode> {
    // Fail on an unknown topic before reading any input.
    client.partition_count(&args.topic).await?;
    let config = ProducerConfig {
        acks: args.acks.into(),
        retry: ProducerConfig::default()
            .retry
            .with_deadline(args.delivery_timeout),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone()))))
        .collect();
    let (reports, mut receiver) = tokio::sync::mpsc::channel::<Report>(64 * 1024);
    let (report, format, topic_name) = (args.report, args.format, args.topic.clone());
    let collector = tokio::spawn(async move {
        let (mut acknowledged, mut failed, mut first_error) = (0u64, 0u64, None);
        let mut out = std::io::stdout();
        while let Some(next) = receiver.recv().await {
            let outcome = match next {
                Report::Delivered(delivery) => delivery.wait().await.map_err(|e| e.to_string()),
                Report::Refused(why) => Err(why),
            };
            match &outcome {
                Ok(_) => acknowledged += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e.clone());
                }
            }
            if report {
                print_report(&mut out, format, &topic_name, &outcome);
            }
        }
        (acknowledged, failed, first_error)
    });
    let topic: Arc<str> = args.topic.as_str().into();
    let mut input = Records {
        input: tokio::io::BufReader::new(tokio::io::stdin()),
        delimiter: args.delimiter.0.clone(),
    };
    let started = Instant::now();
    let mut sent = 0u64;
    while let Some(bytes) = input.next().await? {
        sent += 1;
        let report = match fields(&args, &bytes) {
            Ok((key, value)) => {
                let record = ProducerRecord {
                    topic: Arc::clone(&topic),
                    partition: args.partition,
                    key,
                    value,
                    headers: headers.clone(),
                    timestamp: None,
                };
                match producer.send(record).await {
                    Ok(delivery) => Report::Delivered(delivery),
                    // A record refused before it is sent (too large, say) fails alone.
                    Err(e) => Report::Refused(e.to_string()),
                }
            }
            Err(why) => Report::Refused(format!("record {sent}: {why}")),
        };
        if reports.send(report).await.is_err() {
            break;
        }
        if let Some(rate) = args.rate.filter(|&r| r > 0) {
            crate::pace(started, sent, rate as f64).await;
        }
    }
    drop(reports);
    producer.close().await;
    let (acknowledged, failed, first_error) = collector.await?;
    if failed > 0 {
        eprintln!(
            "weir: {failed} of {sent} records were not acknowledged: {}",
            first_error.unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("produced {acknowledged} records to {}", args.topic);
    Ok(ExitCode::SUCCESS)
}

fn print_report(
    out: &mut impl std::io::Write,
    format: Output,
    topic: &str,
    outcome: &Result<weir_client::RecordMetadata, String>,
) {
    // A closed stdout ends the reports, not the produce.
    let _ = match (format, outcome) {
        (Output::Json, Ok(m)) => writeln!(
            out,
            "{}",
            serde_json::json!({"topic": topic, "partition": m.partition, "offset": m.offset})
        ),
        (Output::Json, Err(e)) => {
            writeln!(out, "{}", serde_json::json!({"topic": topic, "error": e}))
        }
        (Output::Text, Ok(m)) => match m.offset {
            Some(offset) => writeln!(out, "{topic} {} {offset}", m.partition),
            None => writeln!(out, "{topic} {} -", m.partition),
        },
        (Output::Text, Err(e)) => writeln!(out, "{topic} error {e}"),
    };
}
