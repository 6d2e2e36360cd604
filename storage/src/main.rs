//! `weir-storage`: print and verify a partition log directory, read-only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_storage::batch::Compression;
use weir_storage::inspect::{self, DirReport};
use weir_storage::{Batch, BatchHeader};

#[derive(Parser)]
#[command(
    name = "weir-storage",
    version,
    about = "Inspect Weir partition logs on disk (never writes)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every segment, batch and index summary of a log directory, then verify it.
    Dump {
        /// A partition log directory (holding `*.log` segments).
        dir: PathBuf,
        /// Print each record of uncompressed batches too.
        #[arg(long)]
        records: bool,
    },
    /// Verify every batch's CRC and every index entry; print only a summary and problems.
    Verify { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (dir, verbose, records) = match &cli.command {
        Command::Dump { dir, records } => (dir, true, *records),
        Command::Verify { dir } => (dir, false, false),
    };
    let report = match inspect::inspect(dir) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("weir-storage: {:#}", anyhow::Error::new(e));
            return ExitCode::from(2);
        }
    };
    if verbose {
        print_dump(&report, records);
    }
    print_summary(&report);
    let problems = report.problems();
    for problem in &problems {
        println!("PROBLEM {problem}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_dump(report: &DirReport, records: bool) {
    for segment in &report.segments {
        println!(
            "segment {} ({} bytes)",
            segment.path.display(),
            segment.file_size
        );
        for (position, header) in &segment.batches {
            print_batch(*position, header);
            if records && header.compression() == Some(Compression::None) {
                print_records(&segment.path, *position, header);
            }
        }
    }
}

fn print_batch(position: u64, h: &BatchHeader) {
    println!(
        "  batch offsets={}..={} position={position} size={} epoch={} records={} codec={:?} max_timestamp={} producer={}/{}/{}{}{}",
        h.base_offset,
        h.last_offset(),
        h.size(),
        h.partition_leader_epoch,
        h.record_count,
        h.compression(),
        h.max_timestamp,
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        if h.is_transactional() {
            " transactional"
        } else {
            ""
        },
        if h.is_control() { " control" } else { "" },
    );
}

fn print_records(path: &std::path::Path, position: u64, header: &BatchHeader) {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; header.size()];
    let read = std::fs::File::open(path).and_then(|f| f.read_exact_at(&mut bytes, position));
    match read
        .map_err(|e| e.to_string())
        .and_then(|()| Batch::parse(&bytes).map_err(|e| e.to_string()))
    {
        Ok(batch) => match batch.records() {
            Ok(records) => records.iter().for_each(|r| println!("    {r}")),
            Err(e) => println!("    records unreadable: {e}"),
        },
        Err(e) => println!("    batch unreadable: {e}"),
    }
}

fn print_summary(report: &DirReport) {
    let batches: usize = report.segments.iter().map(|s| s.batches.len()).sum();
    let records: i64 = report
        .segments
        .iter()
        .flat_map(|s| &s.batches)
        .map(|(_, h)| i64::from(h.record_count))
        .sum();
    let bytes: u64 = report.segments.iter().map(|s| s.file_size).sum();
    let first = report
        .segments
        .iter()
        .flat_map(|s| s.batches.first())
        .map(|(_, h)| h.base_offset)
        .next();
    let last = report
        .segments
        .iter()
        .rev()
        .flat_map(|s| s.batches.last())
        .map(|(_, h)| h.last_offset())
        .next();
    println!(
        "{}: {} segments, {batches} batches, {records} records, {bytes} bytes, offsets {}..={}, clean shutdown: {}, recovery point: {}",
        report.dir.display(),
        report.segments.len(),
        first.map_or("-".into(), |o| o.to_string()),
        last.map_or("-".into(), |o| o.to_string()),
        if report.clean_shutdown { "yes" } else { "no" },
        report.recovery_point.as_deref().unwrap_or("none"),
    );
    for segment in &report.segments {
        println!(
            "  {}: {} batches, offset index {} entries, time index {} entries{}",
            segment
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            segment.batches.len(),
            segment.offset_index_entries,
            segment.time_index_entries,
            if segment.preallocated_slots > 0 {
                format!(", {} preallocated slots", segment.preallocated_slots)
            } else {
                String::new()
            },
        );
    }
    if let Some(epochs) = &report.leader_epochs {
        println!(
            "  leader epochs: {}",
            epochs.lines().skip(2).collect::<Vec<_>>().join(", ")
        );
    }
}
