//! A file mapped into memory read-write: the only `unsafe` in the crate.
//!
//! # Assumptions
//! The file is created and sized by this process, and no other process changes it while it
//! is mapped: each log directory is held under an exclusive lock (`Log::open`) for as long as
//! the log is open, and index files are never shared between logs.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use memmap2::MmapMut;

#[derive(Debug)]
pub(crate) struct MappedFile {
    file: File,
    /// `None` while the file is empty: a zero-length mapping is not allowed.
    map: Option<MmapMut>,
    len: usize,
}

impl MappedFile {
    /// Opens (creating if needed) `path`; returns the mapping and the file's length before any
    /// resize. The file is grown or shrunk to `len` when given.
    pub(crate) fn open(path: &Path, len: Option<usize>) -> io::Result<(Self, usize)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let existing = file.metadata()?.len() as usize;
        let mut mapped = MappedFile {
            file,
            map: None,
            len: existing,
        };
        if let Some(len) = len {
            mapped.resize(len)?;
        } else {
            mapped.remap()?;
        }
        Ok((mapped, existing))
    }

    fn remap(&mut self) -> io::Result<()> {
        self.map = None;
        if self.len > 0 {
            // SAFETY: the file is open read-write, is `self.len` bytes long (we set or read its
            // length just before), and no other process resizes it while it is mapped (see the
            // module's assumptions). The mapping is dropped before every resize.
            self.map = Some(unsafe { MmapMut::map_mut(&self.file)? });
        }
        Ok(())
    }

    /// Sets the file's length to `len` bytes and maps it again.
    pub(crate) fn resize(&mut self, len: usize) -> io::Result<()> {
        if self.map.is_some() && len == self.len {
            return Ok(());
        }
        self.map = None;
        self.file.set_len(len as u64)?;
        self.len = len;
        self.remap()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }
}
