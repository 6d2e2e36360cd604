//! Any bytes as RecordBatch v2: parsing, record validation and iteration never panic and
//! never allocate by a length the bytes claim.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = weir_record::BatchHeader::parse(data) {
        let _ = header.size();
        let _ = header.last_offset();
    }
    if let Ok(batch) = weir_record::Batch::parse(data) {
        let _ = batch.validate_records();
        if let Ok(records) = batch.iter_records() {
            for record in records {
                let Ok(record) = record else { break };
                let _ = (record.offset, record.key, record.value, record.headers.len());
            }
        }
    }
    for batch in weir_record::batch::batches(data) {
        if batch.is_err() {
            break;
        }
    }
});
