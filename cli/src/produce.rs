//! `weir produce TOPIC`: one record per line of standard input.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use tokio::io::AsyncBufReadExt;
use weir_client::{Acks, Client, Producer, ProducerConfig, ProducerRecord};

use crate::key_value;

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
    /// Split each line at the first SEP into key and value.
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
    let (deliveries, mut receiver) = tokio::sync::mpsc::channel(64 * 1024);
    let collector = tokio::spawn(async move {
        let (mut acknowledged, mut failed, mut first_error) = (0u64, 0u64, None);
        while let Some(delivery) = receiver.recv().await {
            match weir_client::Delivery::wait(delivery).await {
                Ok(_) => acknowledged += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        (acknowledged, failed, first_error)
    });
    let topic: Arc<str> = args.topic.as_str().into();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let started = Instant::now();
    let (mut sent, mut refused, mut first_refusal) = (0u64, 0u64, None);
    while let Some(line) = lines.next_line().await? {
        let (key, value) = match &args.key_separator {
            Some(separator) => match line.split_once(separator.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let record = ProducerRecord {
            topic: Arc::clone(&topic),
            partition: args.partition,
            key,
            value: Some(Bytes::from(value)),
            headers: headers.clone(),
            timestamp: None,
        };
        sent += 1;
        match producer.send(record).await {
            Ok(delivery) => {
                if deliveries.send(delivery).await.is_err() {
                    break;
                }
            }
            // A record refused before it is sent (too large, say) fails alone: the rest go on.
            Err(e) => {
                refused += 1;
                first_refusal.get_or_insert(e.to_string());
            }
        }
        if let Some(rate) = args.rate.filter(|&r| r > 0) {
            crate::pace(started, sent, rate as f64).await;
        }
    }
    drop(deliveries);
    producer.close().await;
    let (acknowledged, failed, first_error) = collector.await?;
    let failed = failed + refused;
    if failed > 0 {
        eprintln!(
            "weir: {failed} of {sent} records were not acknowledged: {}",
            first_refusal.or(first_error).unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("produced {acknowledged} records to {}", args.topic);
    Ok(ExitCode::SUCCESS)
}
