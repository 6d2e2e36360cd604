//! Small text files replaced atomically: write a temporary file, fsync it, rename it over the
//! old one, fsync the directory. A crash leaves either the old or the new content.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::error::LogError;

/// Replaces `dir/name` with `contents`.
///
/// # Errors
/// `WriteCheckpoint` when any step fails; the old file is then still whole.
pub(crate) fn write(dir: &Path, name: &str, contents: &str) -> Result<(), LogError> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let result = (|| -> io::Result<()> {
        let mut file = File::create(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        sync_dir(dir)
    })();
    result.map_err(|source| LogError::WriteCheckpoint { path, source })
}

/// Reads `dir/name`; `None` when it does not exist.
///
/// # Errors
/// `ReadCheckpoint` for any other I/O failure.
pub(crate) fn read(dir: &Path, name: &str) -> Result<Option<String>, LogError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(contents) => Ok(Some(contents)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::ReadCheckpoint { path, source }),
    }
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
