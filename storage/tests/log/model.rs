//! Random sequences of appends, reads, rolls, truncations, retention and reopenings, checked
//! after every step against a plain in-memory model of the log.

use proptest::prelude::*;
use weir_storage::{Log, LogConfig, Record, encode_batch};

#[derive(Debug, Clone)]
enum Op {
    /// Values of the records of one batch.
    Append(Vec<Vec<u8>>),
    /// Read from a point in the log (a fraction of its range) with a byte limit.
    Read {
        at: f64,
        max_bytes: usize,
    },
    Roll,
    /// Truncate at a point in the log.
    Truncate {
        at: f64,
    },
    /// Retention by size with this limit.
    Retain {
        limit: u64,
    },
    Reopen {
        clean: bool,
    },
    FindTimestamp {
        at: f64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..12).prop_map(Op::Append),
        3 => (0.0..1.0f64, 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        1 => (0.0..1.1f64).prop_map(|at| Op::Truncate { at }),
        1 => (0u64..3000).prop_map(|limit| Op::Retain { limit }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => (0.0..1.1f64).prop_map(|at| Op::FindTimestamp { at }),
    ]
}

/// The model: batches in offset order, each with its first offset and record values; the
/// record at offset `o` has timestamp `o * 10`.
#[derive(Debug, Default)]
struct Model {
    start: i64,
    batches: Vec<(i64, Vec<Vec<u8>>)>,
}

impl Model {
    fn end(&self) -> i64 {
        self.batches
            .last()
            .map_or(self.start, |(first, values)| first + values.len() as i64)
    }

    fn records_from(&self, offset: i64) -> Vec<(i64, Vec<u8>)> {
        self.batches
            .iter()
            .flat_map(|(first, values)| {
                values
                    .iter()
                    .enumerate()
                    .map(move |(i, v)| (first + i as i64, v.clone()))
            })
            .filter(|(o, _)| *o >= offset)
            .collect()
    }

    fn point(&self, at: f64) -> i64 {
        self.start + ((self.end() - self.start) as f64 * at) as i64
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_size: 1024,
        index_interval: 100,
        index_capacity: 64,
        retention_age: None,
        ..LogConfig::default()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Some(Log::open(dir.path(), config()).expect("open").0);
    let mut model = Model::default();
    for op in ops {
        let current = log.as_mut().expect("open log");
        match op {
            Op::Append(values) => {
                let first = model.end();
                let records: Vec<Record<'_>> = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Record {
                        timestamp: (first + i as i64) * 10,
                        value: Some(v),
                        ..Record::default()
                    })
                    .collect();
                let mut bytes = encode_batch(0, &records);
                let appended = current.append(&mut bytes, 0).expect("append");
                prop_assert_eq!(appended.first_offset, first);
                prop_assert_eq!(appended.last_offset, first + values.len() as i64 - 1);
                model.batches.push((first, values));
            }
            Op::Read { at, max_bytes } => {
                let offset = model.point(at);
                let slice = current
                    .read(offset, max_bytes, None)
                    .expect("read in range");
                let expected = model.records_from(offset);
                match slice {
                    None => prop_assert!(
                        expected.is_empty(),
                        "nothing read at {} of {}",
                        offset,
                        model.end()
                    ),
                    Some(slice) => {
                        let mut got = Vec::new();
                        for batch in weir_storage::batch::batches(&slice.bytes) {
                            let (_, batch) = batch.expect("valid batch");
                            for r in batch.records().expect("records") {
                                got.push((r.offset, r.value.unwrap_or_default().to_vec()));
                            }
                        }
                        prop_assert!(!got.is_empty());
                        let got: Vec<_> = got.into_iter().filter(|(o, _)| *o >= offset).collect();
                        prop_assert_eq!(&got[..], &expected[..got.len()]);
                        prop_assert_eq!(
                            slice.next_offset,
                            got.last().map_or(offset, |(o, _)| o + 1)
                        );
                    }
                }
            }
            Op::Roll => current.roll().expect("roll"),
            Op::Truncate { at } => {
                let offset =
                    (model.start + ((model.end() - model.start + 2) as f64 * at) as i64 - 1).max(0);
                current.truncate_to(offset).expect("truncate");
                if offset <= model.start {
                    model.batches.clear();
                    model.start = offset;
                } else {
                    model
                        .batches
                        .retain(|(first, values)| first + values.len() as i64 - 1 < offset);
                }
            }
            Op::Retain { limit } => {
                let mut config = current.config().clone();
                config.retention_size = Some(limit);
                current.set_config(config);
                let outcome = current.apply_retention().expect("retention");
                prop_assert!(
                    outcome.log_start_offset >= model.start
                        && outcome.log_start_offset <= model.end()
                );
                prop_assert!(
                    model
                        .batches
                        .iter()
                        .any(|(first, _)| *first == outcome.log_start_offset)
                        || outcome.log_start_offset == model.end(),
                    "the log starts at a batch boundary"
                );
                model.start = outcome.log_start_offset;
                model
                    .batches
                    .retain(|(first, _)| *first >= outcome.log_start_offset);
                let mut config = current.config().clone();
                config.retention_size = None;
                current.set_config(config);
            }
            Op::Reopen { clean } => {
                let old = log.take().expect("open log");
                if clean {
                    old.close().expect("close");
                } else {
                    drop(old);
                }
                let (reopened, report) = Log::open(dir.path(), config()).expect("reopen");
                prop_assert_eq!(report.truncated_bytes, 0);
                log = Some(reopened);
            }
            Op::FindTimestamp { at } => {
                let offset = model.point(at);
                let found = current.offset_for_timestamp(offset * 10).expect("lookup");
                let expected = model.records_from(offset).first().map(|(o, _)| *o);
                prop_assert_eq!(found.map(|f| f.offset), expected);
            }
        }
        let current = log.as_ref().expect("open log");
        prop_assert_eq!(current.log_start_offset(), model.start);
        prop_assert_eq!(current.log_end_offset(), model.end());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
