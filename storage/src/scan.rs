//! Walking a segment file's batches: headers only (to find an offset, or to trust an index),
//! or every CRC (recovery, `weir-storage verify`). Reads in chunks and never allocates more
//! than the file holds, whatever a length field claims.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::batch::{Batch, BatchHeader, HEADER_LEN, InvalidBatch};

/// Bytes read at a time when walking batch headers.
const HEADER_CHUNK: usize = 64 * 1024;
/// Bytes read at a time when verifying every batch (recovery, dump).
const VERIFY_CHUNK: usize = 4 * 1024 * 1024;

/// What walking a segment's batches found at the point it stopped.
#[derive(Debug)]
pub(crate) enum ScanEnd {
    /// Every byte up to the end of the file is whole batches.
    Clean,
    /// Bytes from `position` on are not a whole batch (a torn write or junk).
    Torn { position: u64 },
    /// The batch at `position` fails validation.
    Invalid { position: u64, reason: InvalidBatch },
}

/// A segment's batches found by a scan, with positions.
pub(crate) struct Scanned {
    pub(crate) batches: Vec<(u64, BatchHeader)>,
    pub(crate) end: ScanEnd,
}

/// Walks the batches of `file` from `position` to `end`; with `verify`, checks every CRC.
pub(crate) fn scan_file(file: &File, end: u64, position: u64, verify: bool) -> io::Result<Scanned> {
    let mut scanner = Scanner::new(file, end, position, verify);
    let mut batches = Vec::new();
    loop {
        match scanner.next()? {
            Step::Batch(position, header) => batches.push((position, header)),
            Step::End(end) => return Ok(Scanned { batches, end }),
        }
    }
}

pub(crate) enum Step {
    Batch(u64, BatchHeader),
    End(ScanEnd),
}

/// Reads a segment file in chunks and yields batch headers; never allocates more than the
/// file holds, whatever a length field claims.
pub(crate) struct Scanner<'a> {
    file: &'a File,
    end: u64,
    position: u64,
    buffer: Vec<u8>,
    buffer_start: u64,
    /// Whether each batch's CRC is checked, which needs whole batches in the buffer.
    verify: bool,
    /// Bytes read at a time.
    chunk: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(file: &'a File, end: u64, position: u64, verify: bool) -> Self {
        Scanner {
            file,
            end,
            position,
            buffer: Vec::new(),
            buffer_start: position,
            verify,
            chunk: if verify { VERIFY_CHUNK } else { HEADER_CHUNK },
        }
    }

    /// Reads `chunk` bytes at a time (at least a header's worth).
    pub(crate) fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(HEADER_LEN);
        self
    }

    /// Makes sure `[position, position + len)` is in the buffer.
    fn fill(&mut self, len: usize) -> io::Result<()> {
        let buffered_end = self.buffer_start + self.buffer.len() as u64;
        if self.position >= self.buffer_start && self.position + len as u64 <= buffered_end {
            return Ok(());
        }
        let read_len = (len.max(self.chunk) as u64).min(self.end - self.position) as usize;
        self.buffer.resize(read_len, 0);
        self.file.read_exact_at(&mut self.buffer, self.position)?;
        self.buffer_start = self.position;
        Ok(())
    }

    fn slice(&self, len: usize) -> &[u8] {
        let at = (self.position - self.buffer_start) as usize;
        &self.buffer[at..at + len]
    }

    pub(crate) fn next(&mut self) -> io::Result<Step> {
        if self.position >= self.end {
            return Ok(Step::End(ScanEnd::Clean));
        }
        let position = self.position;
        if self.end - position < HEADER_LEN as u64 {
            return Ok(Step::End(ScanEnd::Torn { position }));
        }
        self.fill(HEADER_LEN)?;
        let header = match BatchHeader::parse(self.slice(HEADER_LEN)) {
            Ok(header) => header,
            Err(reason) => return Ok(Step::End(ScanEnd::Invalid { position, reason })),
        };
        let size = header.size() as u64;
        if position + size > self.end {
            return Ok(Step::End(ScanEnd::Torn { position }));
        }
        if self.verify {
            self.fill(size as usize)?;
            if let Err(reason) = Batch::parse(self.slice(size as usize)) {
                return Ok(Step::End(ScanEnd::Invalid { position, reason }));
            }
        }
        self.position += size;
        Ok(Step::Batch(position, header))
    }
}
