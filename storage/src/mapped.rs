//! A file mapped into memory read-write: the only `unsafe` in the crate.
//!
//! The mapping may be longer than the file (an index maps the most it may grow to), but no
//! byte past [`MappedFile::allocated`] is ever touched: every byte below it has a disk block,
//! reserved by `fallocate` (or written as zeros where the file system has no `fallocate`)
//! before it is used. A page of a mapped file without a block would be allocated on its
//! first write, and on a full disk that write is a SIGBUS that kills the process; here the
//! full disk is an `ENOSPC` error from [`MappedFile::reserve`], before anything is written.
//!
//! The file's descriptor is not kept: it is opened again for the rare resize, so an open
//! index costs a mapping, not a descriptor.
//!
//! # Assumptions
//! The file is created and sized by this process, and no other process changes it while it
//! is mapped: each log directory is held under an exclusive lock (`Log::open`) for as long as
//! the log is open, and index files are never shared between logs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

/// The least a reservation grows a file by (a page), and the most beyond what is needed.
const MIN_GROWTH: usize = 4096;
const MAX_GROWTH: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct MappedFile {
    path: PathBuf,
    /// `None` while nothing is mapped: a zero-length mapping is not allowed.
    map: Option<MmapMut>,
    /// The mapping's length. Invariant: `allocated <= mapped` whenever `map` is `Some`.
    mapped: usize,
    /// The file's length; every byte below it has a disk block.
    allocated: usize,
}

impl MappedFile {
    /// Opens (creating if needed) `path` and maps it; returns the mapping and the file's
    /// length. With `truncate`, the file is emptied first. The mapping is `capacity` bytes
    /// long, or the file's length when that is more.
    pub(crate) fn open(path: &Path, capacity: usize, truncate: bool) -> io::Result<(Self, usize)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(path)?;
        let existing = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::other("index file larger than memory"))?;
        let mut mapped = MappedFile {
            path: path.to_path_buf(),
            map: None,
            mapped: 0,
            allocated: existing,
        };
        mapped.map(&file, capacity)?;
        Ok((mapped, existing))
    }

    /// Nothing mapped and nothing on disk: an index that stands in for a lost one.
    pub(crate) fn empty(path: &Path) -> MappedFile {
        MappedFile {
            path: path.to_path_buf(),
            map: None,
            mapped: 0,
            allocated: 0,
        }
    }

    fn map(&mut self, file: &File, capacity: usize) -> io::Result<()> {
        self.map = None;
        self.mapped = 0;
        let len = capacity.max(self.allocated);
        if len > 0 {
            // SAFETY: the file is open read-write, and no other process changes it while it is
            // mapped (see the module's assumptions). The mapping may extend past the file's
            // end; only bytes below `allocated` (the file's length, every one backed by a
            // disk block) are ever read or written, through `bytes` and `bytes_mut`, so no
            // access touches a page without a block behind it. The file only shrinks in
            // `truncate`, which lowers `allocated` first.
            self.map = Some(unsafe { MmapOptions::new().len(len).map_mut(file)? });
            self.mapped = len;
        }
        Ok(())
    }

    fn reopen(&self) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(&self.path)
    }

    /// Maps the file anew with room for `capacity` bytes (nothing is allocated).
    pub(crate) fn set_capacity(&mut self, capacity: usize) -> io::Result<()> {
        if self.map.is_some() && capacity.max(self.allocated) == self.mapped {
            return Ok(());
        }
        let file = self.reopen()?;
        self.map(&file, capacity)
    }

    /// Makes sure the first `len` bytes have disk blocks (growing by a chunk, at most to the
    /// mapping's length). `len` past the mapping is refused.
    ///
    /// # Errors
    /// `ENOSPC` and other I/O errors, with nothing changed.
    pub(crate) fn reserve(&mut self, len: usize) -> io::Result<()> {
        if len <= self.allocated {
            return Ok(());
        }
        if len > self.mapped {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} bytes asked of a mapping of {}", len, self.mapped),
            ));
        }
        let growth = self
            .allocated
            .clamp(MIN_GROWTH, MAX_GROWTH)
            .max(len - self.allocated);
        let target = (self.allocated + growth).min(self.mapped);
        let file = self.reopen()?;
        allocate(&file, self.allocated, target)?;
        self.allocated = target;
        Ok(())
    }

    /// Sets the file's length to `len` (at most what is allocated: this only shrinks).
    pub(crate) fn truncate(&mut self, len: usize) -> io::Result<()> {
        debug_assert!(len <= self.allocated);
        let len = len.min(self.allocated);
        if len == self.allocated {
            return Ok(());
        }
        // Lowered first: nothing past the new end is touched from here on.
        self.allocated = len;
        self.reopen()?.set_len(len as u64)
    }

    pub(crate) fn allocated(&self) -> usize {
        self.allocated
    }

    /// The most the file may grow to while mapped as now.
    pub(crate) fn capacity(&self) -> usize {
        self.mapped
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.map {
            Some(map) => &map[..self.allocated],
            None => &[],
        }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.map {
            Some(map) => &mut map[..self.allocated],
            None => &mut [],
        }
    }
}

/// Gives `[from, to)` of `file` disk blocks and extends its length to `to`: `fallocate`, or
/// zeros written where the file system does not support it.
fn allocate(file: &File, from: usize, to: usize) -> io::Result<()> {
    let len = (to - from) as u64;
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), from as u64, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            let zeros = vec![0u8; to - from];
            file.write_all_at(&zeros, from as u64)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn space_is_reserved_in_chunks_and_never_past_the_mapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.index");
        let (mut file, existing) = MappedFile::open(&path, 10 << 20, true).expect("open");
        assert_eq!(existing, 0);
        assert!(
            file.bytes().is_empty(),
            "nothing is reachable before a reservation"
        );
        file.reserve(8).expect("reserve");
        assert_eq!(file.allocated(), MIN_GROWTH);
        let metadata = std::fs::metadata(&path).expect("stat");
        assert_eq!(metadata.len(), MIN_GROWTH as u64);
        assert!(
            metadata.blocks() * 512 >= MIN_GROWTH as u64,
            "the chunk has real blocks, not a hole"
        );
        file.bytes_mut()[..8].copy_from_slice(&[1; 8]);
        file.reserve(MIN_GROWTH + 1).expect("grow");
        assert_eq!(file.allocated(), 2 * MIN_GROWTH);
        assert!(file.reserve((10 << 20) + 1).is_err());
        file.truncate(8).expect("trim");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 8);
        assert_eq!(file.bytes(), &[1; 8]);
    }
}
