//! Where the controller keeps [`ClusterState`]: a store with conditional writes, so that two
//! controllers cannot both win. The file store serves `weir-controller` and
//! `weir-broker dev`; the Kubernetes store (custom resources written with a resourceVersion
//! precondition) comes with the operator.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::ClusterState;

/// A stored state's version, opaque to the controller (a counter in the file store, a
/// resourceVersion in Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(pub String);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote since the version the writer read: it is no longer the controller.
    #[error(
        "the metadata changed since version {expected:?} (now {found:?}): another controller wrote it"
    )]
    Conflict {
        expected: Option<Version>,
        found: Option<Version>,
    },
    /// A store behind an API (the Kubernetes store) failed to answer or refused a write.
    #[error("{action}: {message}")]
    Remote { action: String, message: String },
    #[error("the metadata store at {path} is in use by another process")]
    Locked { path: PathBuf },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid metadata")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Turns an I/O error of `action` on `path` into a `StoreError`.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// Conditional storage of the whole cluster state.
pub trait MetadataStore: Send + Sync {
    /// The stored state and its version; `None` before the first write.
    fn load(
        &self,
    ) -> impl Future<Output = Result<Option<(ClusterState, Version)>, StoreError>> + Send;

    /// Writes `state` if the stored version is still `expected` (`None`: nothing stored yet);
    /// returns the new version.
    fn store(
        &self,
        state: &ClusterState,
        expected: Option<&Version>,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;
}

#[derive(Serialize, Deserialize)]
struct StoredFile {
    version: u64,
    state: ClusterState,
}

/// One JSON file, replaced atomically (write a temporary file, fsync, rename, fsync the
/// directory), and held with an exclusive lock while the store is open.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    dir: PathBuf,
    /// Held for the store's life: one process at a time.
    _lock: File,
}

const FILE_NAME: &str = "cluster.json";

impl FileStore {
    /// Opens (creating the directory) the store in `dir`.
    ///
    /// # Errors
    /// `Io`, or `Locked` when another process has it open.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let lock_path = dir.join("cluster.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock", &lock_path)(e)),
        }
        Ok(FileStore {
            path: dir.join(FILE_NAME),
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    fn read(&self) -> Result<Option<StoredFile>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &self.path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    fn write(&self, stored: &StoredFile) -> Result<(), StoreError> {
        let temporary = self.dir.join(format!("{FILE_NAME}.tmp"));
        let bytes = serde_json::to_vec_pretty(stored).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let mut file = File::create(&temporary).map_err(io_error("create", &temporary))?;
        file.write_all(&bytes)
            .map_err(io_error("write", &temporary))?;
        file.sync_all().map_err(io_error("fsync", &temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(io_error("rename", &self.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsync", &self.dir))
    }

    fn load_now(&self) -> Result<Option<(ClusterState, Version)>, StoreError> {
        Ok(self
            .read()?
            .map(|f| (f.state, Version(f.version.to_string()))))
    }

    fn store_now(
        &self,
        state: &ClusterState,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        let current = self.read()?.map(|f| f.version);
        let found = current.map(|v| Version(v.to_string()));
        if found.as_ref() != expected {
            return Err(StoreError::Conflict {
                expected: expected.cloned(),
                found,
            });
        }
        let version = current.map_or(1, |v| v + 1);
        self.write(&StoredFile {
            version,
            state: state.clone(),
        })?;
        Ok(Version(version.to_string()))
    }
}

impl MetadataStore for FileStore {
    // The file is small: reading and writing it inline is cheaper than a trip to a blocking
    // thread, and the fsyncs are what a decision must wait for anyway.
    async fn load(&self) -> Result<Option<(ClusterState, Version)>, StoreError> {
        self.load_now()
    }

    async fn store(
        &self,
        state: &ClusterState,
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        self.store_now(state, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn round_trip_and_compare_and_set() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FileStore::open(dir.path()).expect("open");
        assert!(block_on(store.load()).expect("load").is_none());
        let mut state = ClusterState {
            controller_epoch: 1,
            ..ClusterState::default()
        };
        state.register(1, "127.0.0.1:1".into(), Some("a".into()), 7);
        let first = block_on(store.store(&state, None)).expect("first write");
        // A writer that read nothing, or an old version, loses.
        assert!(matches!(
            block_on(store.store(&state, None)),
            Err(StoreError::Conflict { .. })
        ));
        state.controller_epoch = 2;
        let second = block_on(store.store(&state, Some(&first))).expect("second write");
        assert_ne!(first, second);
        assert!(matches!(
            block_on(store.store(&state, Some(&first))),
            Err(StoreError::Conflict { .. })
        ));
        drop(store);
        let reopened = FileStore::open(dir.path()).expect("reopen");
        let (loaded, version) = block_on(reopened.load()).expect("load").expect("stored");
        assert_eq!(loaded, state);
        assert_eq!(version, second);
        assert!(!dir.path().join("cluster.json.tmp").exists());
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().expect("dir");
        let _held = FileStore::open(dir.path()).expect("open");
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }

    #[test]
    fn damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\": 3, \"sta").expect("write");
        let store = FileStore::open(dir.path()).expect("open");
        let error = block_on(store.load()).expect_err("corrupt");
        assert!(matches!(error, StoreError::Corrupt { .. }));
        assert!(error.to_string().contains("cluster.json"));
    }
}
