//! `weir bench produce|consume|end-to-end`: a live progress line on stderr, then throughput
//! and latency percentiles (or one JSON object with `--output json`). MB is 10^6 bytes.
//!
//! Latency: produce, from `send` to the moment the batch's answer reached the client, on one
//! record in 8; consume, the duration of each poll; end-to-end, from `send` to the record's
//! arrival at a consumer (the send time travels in the record's first 8 bytes).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;
use weir_client::{
    Client, ClientError, Consumer, ConsumerConfig, Delivery, Producer, ProducerConfig,
    ProducerRecord, Reason, StartAt,
};

use crate::Output;
use crate::produce::AcksArg;

/// Produce latency is measured on one record in this many.
const LATENCY_SAMPLE: u64 = 8;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as possible (or at --rate).
    Produce(BenchArgs),
    /// Consume records from the start of the topic.
    Consume(BenchArgs),
    /// Produce and consume at once; latency from send to receipt.
    EndToEnd(BenchArgs),
    /// Produce or consume through Kafka's wire protocol, against any Kafka-speaking broker.
    Kafka(crate::bench_kafka::KafkaBenchArgs),
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// The topic (made with --partitions when it does not exist).
    #[arg(required_unless_present = "topic_flag")]
    topic: Option<String>,
    /// The topic, as earlier versions took it.
    #[arg(long = "topic", hide = true, conflicts_with = "topic")]
    topic_flag: Option<String>,
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    #[arg(long, value_enum, default_value = "1")]
    acks: AcksArg,
    /// Records per second in all, across producers.
    #[arg(long)]
    rate: Option<u64>,
    #[arg(long, default_value_t = 1)]
    producers: u64,
    /// Partitions of the topic if the bench creates it.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_size: usize,
    /// Produce requests in flight per partition.
    #[arg(long, default_value_t = ProducerConfig::default().max_in_flight)]
    max_in_flight: usize,
    /// How long a producer batch waits for more records once it could be sent (batches grow
    /// anyway while requests are in flight).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0ms")]
    linger: Duration,
    /// text (for people) or json (for scripts).
    #[arg(long = "format", alias = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

impl BenchArgs {
    /// The topic, given positionally or with `--topic` (clap requires one).
    fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or_default()
    }
}

pub async fn run(client: &Client, command: BenchCommand) -> anyhow::Result<ExitCode> {
    let (mode, mut args) = match command {
        BenchCommand::Produce(a) => ("produce", a),
        BenchCommand::Consume(a) => ("consume", a),
        BenchCommand::EndToEnd(a) => ("end-to-end", a),
        BenchCommand::Kafka(a) => return crate::bench_kafka::run(a).await,
    };
    if let Some(topic) = args.topic_flag.take() {
        args.topic = Some(topic);
    }
    if args.record_size < 8 && mode == "end-to-end" {
        anyhow::bail!(
            "end-to-end needs --record-size of at least 8 bytes (the send time travels in the record)"
        );
    }
    ensure_topic(client, args.topic(), args.partitions).await?;
    let progress = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn(show_progress(mode, Arc::clone(&progress), args.records));
    let started = Instant::now();
    let latencies = match mode {
        "produce" => produce(client, &args, &progress, started, false).await?,
        "consume" => consume(client, &args, &progress, StartAt::Earliest, started, false).await?,
        _ => {
            // The consumer starts at the end before anything is produced, and counts progress.
            let ready = consume_setup(client, &args, StartAt::Latest).await?;
            let consumer = {
                let (args, progress) = (args.clone(), Arc::clone(&progress));
                tokio::spawn(
                    async move { consume_with(ready, &args, &progress, started, true).await },
                )
            };
            produce(client, &args, &Arc::new(AtomicU64::new(0)), started, true).await?;
            consumer.await.context("consumer task")??
        }
    };
    let elapsed = started.elapsed();
    ticker.abort();
    eprintln!();
    report(mode, &args, elapsed, latencies)?;
    Ok(ExitCode::SUCCESS)
}

async fn ensure_topic(client: &Client, topic: &str, partitions: i32) -> anyhow::Result<()> {
    match client.partition_count(topic).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason() == Some(Reason::UnknownTopic) => {
            client
                .create_topic(topic, partitions, 1, Default::default())
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn show_progress(mode: &'static str, done: Arc<AtomicU64>, total: u64) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let count = done.load(Ordering::Relaxed);
        let rate = count as f64 / started.elapsed().as_secs_f64();
        eprint!("\r{mode}: {count}/{total} records, {rate:.0} records/s   ");
    }
}

/// Runs the producers; returns latencies in microseconds.
async fn produce(
    client: &Client,
    args: &BenchArgs,
    progress: &Arc<AtomicU64>,
    started: Instant,
    stamp: bool,
) -> anyhow::Result<Vec<u32>> {
    let config = ProducerConfig {
        acks: args.acks.into(),
        batch_size: args.batch_size,
        linger: args.linger,
        max_in_flight: args.max_in_flight,
        ..ProducerConfig::default()
    };
    let producers = args.producers.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..producers {
        let share = args.records / producers + u64::from(index < args.records % producers);
        let producer = Producer::new(client.clone(), config.clone());
        let (topic, size, progress): (Arc<str>, _, _) =
            (args.topic().into(), args.record_size, Arc::clone(progress));
        let rate = args.rate.map(|r| (r as f64 / producers as f64).max(1.0));
        tasks.spawn(async move {
            // One message per batch: its first delivery, the sampled send times, the records.
            let (sender, mut receiver) =
                tokio::sync::mpsc::channel::<(Delivery, Vec<Instant>, u64)>(1024);
            let collector =
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity((share / LATENCY_SAMPLE) as usize + 1);
                    while let Some((delivery, sent, count)) = receiver.recv().await {
                        let (result, acknowledged) = delivery.wait_timed().await;
                        result?;
                        latencies.extend(sent.iter().map(|s| {
                            (acknowledged - *s).as_micros().min(u128::from(u32::MAX)) as u32
                        }));
                        progress.fetch_add(count, Ordering::Relaxed);
                    }
                    Ok::<_, ClientError>(latencies)
                });
            let shared = Bytes::from(vec![b'w'; size]);
            let begun = Instant::now();
            let mut batch: Option<(Delivery, Vec<Instant>, u64)> = None;
            for i in 0..share {
                let value = if stamp {
                    let mut value = vec![b'w'; size];
                    value[..8]
                        .copy_from_slice(&(started.elapsed().as_nanos() as u64).to_be_bytes());
                    Bytes::from(value)
                } else {
                    shared.clone()
                };
                // Latency is sampled on every 8th record: reading the clock for each one costs
                // more than the rest of a send.
                let sent = (i % LATENCY_SAMPLE == 0).then(Instant::now);
                let delivery = producer
                    .send(ProducerRecord::new(Arc::clone(&topic), value))
                    .await?;
                match &mut batch {
                    Some((first, sends, count)) if first.batch_id() == delivery.batch_id() => {
                        sends.extend(sent);
                        *count += 1;
                    }
                    _ => {
                        if let Some(full) = batch.replace((delivery, sent.into_iter().collect(), 1))
                            && sender.send(full).await.is_err()
                        {
                            break;
                        }
                    }
                }
                if let Some(rate) = rate {
                    crate::pace(begun, i + 1, rate).await;
                }
            }
            if let Some(last) = batch {
                let _ = sender.send(last).await;
            }
            drop(sender);
            producer.close().await;
            collector
                .await
                .map_err(|e| ClientError::InvalidArgument(e.to_string()))?
        });
    }
    let mut latencies = Vec::with_capacity((args.records / LATENCY_SAMPLE) as usize + 1);
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result.context("producer task")??);
    }
    Ok(latencies)
}

async fn consume_setup(
    client: &Client,
    args: &BenchArgs,
    start: StartAt,
) -> anyhow::Result<Consumer> {
    let config = ConsumerConfig {
        max_bytes: 8 << 20,
        max_wait: Duration::from_millis(200),
    };
    Ok(Consumer::assign(client.clone(), args.topic(), None, start, config).await?)
}

async fn consume(
    client: &Client,
    args: &BenchArgs,
    progress: &Arc<AtomicU64>,
    start: StartAt,
    started: Instant,
    stamped: bool,
) -> anyhow::Result<Vec<u32>> {
    let consumer = consume_setup(client, args, start).await?;
    consume_with(consumer, args, progress, started, stamped).await
}

/// Consumes `args.records` records; returns poll durations, or with `stamped`, each record's
/// time from send to receipt, in microseconds. Gives up after 10 s without a record.
async fn consume_with(
    mut consumer: Consumer,
    args: &BenchArgs,
    progress: &Arc<AtomicU64>,
    started: Instant,
    stamped: bool,
) -> anyhow::Result<Vec<u32>> {
    let mut latencies = Vec::new();
    let mut received = 0u64;
    let mut last_record = Instant::now();
    while received < args.records {
        let polled = Instant::now();
        let records = consumer.poll().await?;
        let now = started.elapsed().as_nanos() as u64;
        if records.is_empty() {
            if last_record.elapsed() > Duration::from_secs(10) {
                anyhow::bail!(
                    "no record for 10 s after {received} of {} records",
                    args.records
                );
            }
            continue;
        }
        last_record = Instant::now();
        if stamped {
            for record in &records {
                let sent = record
                    .value
                    .as_deref()
                    .and_then(|v| v.get(..8))
                    .map_or(now, |b| {
                        u64::from_be_bytes(b.try_into().unwrap_or_default())
                    });
                latencies.push((now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32);
            }
        } else {
            latencies.push(polled.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        }
        received += records.len() as u64;
        progress.store(received, Ordering::Relaxed);
    }
    Ok(latencies)
}

fn report(
    mode: &str,
    args: &BenchArgs,
    elapsed: Duration,
    mut latencies: Vec<u32>,
) -> std::io::Result<()> {
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[at]) / 1000.0
    };
    let seconds = elapsed.as_secs_f64();
    let records_per_sec = args.records as f64 / seconds;
    let mb_per_sec = records_per_sec * args.record_size as f64 / 1e6;
    let (p50, p99, p999, max) = (
        percentile(0.5),
        percentile(0.99),
        percentile(0.999),
        percentile(1.0),
    );
    match args.output {
        Output::Json => outln!(
            "{}",
            json!({
                "mode": mode,
                "topic": args.topic(),
                "records": args.records,
                "record_size": args.record_size,
                "producers": args.producers,
                "seconds": seconds,
                "records_per_sec": records_per_sec,
                "mb_per_sec": mb_per_sec,
                "p50_ms": p50,
                "p99_ms": p99,
                "p999_ms": p999,
                "max_ms": max,
            })
        ),
        Output::Text => outln!(
            "{mode}: {} records of {} B in {seconds:.2} s: {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s; latency ms: p50 {p50:.3}, p99 {p99:.3}, p99.9 {p999:.3}, max {max:.3}",
            args.records,
            args.record_size
        ),
    }
    Ok(())
}
