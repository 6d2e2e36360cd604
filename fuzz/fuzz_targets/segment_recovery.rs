//! Any bytes as a segment file (and as its indexes) after a crash: opening the log recovers
//! it (cutting at the first invalid byte) without panicking, and what it then reads is
//! whole, valid batches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_storage::{Log, LogConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    // The first byte splits the input between the log and its offset index.
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (index, log) = data.split_at(split);
    let _ = std::fs::write(dir.path().join("00000000000000000000.log"), log);
    let _ = std::fs::write(dir.path().join("00000000000000000000.index"), index);
    let Ok((log, _)) = Log::open(dir.path(), LogConfig::default()) else {
        return;
    };
    let mut offset = log.log_start_offset();
    while let Ok(Some(slice)) = log.read(offset, 1 << 20, None) {
        for batch in weir_record::batch::batches(&slice.bytes) {
            assert!(batch.is_ok(), "recovery left an invalid batch readable");
        }
        if slice.next_offset <= offset {
            break;
        }
        offset = slice.next_offset;
    }
});
