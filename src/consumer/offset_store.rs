//! Consumer offsets: the in-memory [`OffsetTable`] of one consumer group and the
//! [`LocalFileStore`] that persists it in BROADCASTING mode (rocketmq-remoting.md section 7.9).
//!
//! # Sharing the table
//!
//! One `OffsetTable` per group is shared (behind an `Arc`) by the queue workers that advance
//! offsets, the persist task that reads them every few seconds, the rebalancer that removes
//! revoked queues, and the admin endpoints that report them. It is a `std::sync::Mutex` around a
//! map, as in mini-redis's `Db` (style.md rule 6): every method locks, does one map operation and
//! returns owned data, so no guard ever leaves a method and none can be held across an `.await`.
//! Giving each worker its own offset and funnelling updates through a channel was rejected: the
//! readers (persist, rebalance, admin) need a consistent view of all queues at arbitrary times,
//! which a channel would turn into request/response round trips for a few integer writes.
//!
//! Persisting sends every held queue each round, like Java, so entries carry no "changed since
//! the last persist" marker: nothing would read it.
//!
//! # The local file
//!
//! [`LocalFileStore`] keeps one group's offsets in `<dir>/<group>/offsets.json`, or in
//! `<dir>/<instance name>/<group>/offsets.json` when an instance name is set explicitly. Java puts
//! the client id (`ip@instance`) in the path instead; ours changes with every process id and
//! container IP, so a restarted consumer would look in a new directory, find nothing and start
//! from `consume_from` (skipping what was produced while it was down, with LAST_OFFSET). Neither
//! part of our path changes across restarts. Files written under `ip@pid` directories by earlier
//! builds are not read. The content stays fastjson's pretty, object-keyed format, so a Java
//! consumer's file can be copied in and read, and vice versa. Writes are atomic (temp file,
//! fsync, rename, directory fsync; each directory the store creates is fsynced into its parent,
//! so a power loss cannot forget the path) and the previous good content is kept in
//! `offsets.json.bak`; loading falls back to it. A file that cannot be read is an error, never a
//! silent reset to "no offsets" (which would re-consume or skip a whole topic).
//!
//! Two consumers writing one file would overwrite each other's offsets, and the path no longer
//! tells daemons apart unless they set an instance name. So a consumer takes an exclusive lock
//! on `<store dir>/.lock` ([`LocalFileStore::lock`]) before it loads, and holds it until it has
//! shut down (and its last save is done); a second consumer of the same store fails to start,
//! unless the holder has recorded in the lock file that it is draining
//! ([`StoreLock::mark`], [`LocalFileStore::holder`]): then the newcomer may wait for it, as a
//! rolling restart that overlaps the old and the new daemon needs. The lock is an advisory file
//! lock (`flock` on Unix), released by the OS when the process dies, so a crash leaves nothing
//! stale behind. The lock file itself is never removed: deleting it while another process
//! opens it would let two processes lock two different files of the same name. The store uses
//! blocking `std::fs`: writes are small and rare, fsync has no async form anyway, and the caller
//! runs `load`/`save` under `tokio::task::spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::remoting::body::offset_table::{parse_offset_table, write_offset_table};
use crate::remoting::{MessageQueue, RemotingError};

/// The committed offsets of one consumer group, per queue. See the module documentation.
#[derive(Debug, Default)]
pub struct OffsetTable {
    entries: Mutex<HashMap<MessageQueue, i64>>,
}

impl OffsetTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<MessageQueue, i64>> {
        // Every critical section is a single map operation, so a panic elsewhere cannot leave
        // the map half-updated: the data behind a poisoned lock is still consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the offset of `mq`. With `increase_only` a value not larger than the current one is
    /// ignored (concurrent consumption commits); without it the value always wins (orderly
    /// commits, offset resets). Returns whether the stored offset changed.
    pub fn update(&self, mq: &MessageQueue, offset: i64, increase_only: bool) -> bool {
        let mut entries = self.lock();
        match entries.get_mut(mq) {
            Some(current) => {
                if *current == offset || (increase_only && offset < *current) {
                    return false;
                }
                *current = offset;
            }
            None => {
                entries.insert(mq.clone(), offset);
            }
        }
        true
    }

    /// The offset held for `mq`, if any.
    pub fn read(&self, mq: &MessageQueue) -> Option<i64> {
        self.lock().get(mq).copied()
    }

    /// Forgets `mq` (the queue was revoked and its offset persisted); returns its last offset.
    pub fn remove(&self, mq: &MessageQueue) -> Option<i64> {
        self.lock().remove(mq)
    }

    /// Every held offset, sorted by queue.
    pub fn snapshot(&self) -> Vec<(MessageQueue, i64)> {
        let mut out: Vec<(MessageQueue, i64)> = self
            .lock()
            .iter()
            .map(|(mq, offset)| (mq.clone(), *offset))
            .collect();
        out.sort();
        out
    }

    /// Number of queues held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no queue is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Why one offset file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileFault {
    /// The file does not exist.
    #[error("missing")]
    Missing,
    /// The file exists but is empty.
    #[error("empty")]
    Empty,
    /// The file could not be read.
    #[error("unreadable: {0}")]
    Io(#[source] io::Error),
    /// The content is not an offset table (boxed: the protocol error is large and rare).
    #[error("not an offset table: {0}")]
    Parse(#[source] Box<RemotingError>),
}

/// Errors of the local offset file store; each names the file(s) involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OffsetStoreError {
    /// Writing (or creating the directory of) an offset file failed.
    #[error("cannot write offset file {}: {source}", .path.display())]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Neither the offset file nor its backup could be loaded. Starting from nothing would
    /// re-consume or skip whole queues, so the operator must decide.
    #[error(
        "offset file {} is unusable ({fault}) and so is its backup {} ({backup_fault})",
        .path.display(),
        .backup.display()
    )]
    Unusable {
        /// `offsets.json`.
        path: PathBuf,
        /// What is wrong with it.
        fault: FileFault,
        /// `offsets.json.bak`.
        backup: PathBuf,
        /// What is wrong with the backup.
        backup_fault: FileFault,
    },
    /// The store's directory cannot be created or locked, or does not accept new files:
    /// found at start, before the consumer connects, rather than at the first save.
    #[error(
        "broadcasting offsets cannot be kept in {}: cannot write {}: {source}; \
         offset_store_path must be a writable directory (in a container, a mounted volume)",
        .dir.display(),
        .path.display()
    )]
    Unwritable {
        /// The store's directory.
        dir: PathBuf,
        /// The directory or file that could not be written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another consumer (in this process or another) holds the store's lock.
    #[error(
        "offsets in {} are in use: another consumer holds {} ({}). Another daemon with the \
         same group and the same instance name (or none) uses these offsets, and two would \
         overwrite each other's; give each daemon that shares offset_store_path its own \
         instance_name, or its own offset_store_path",
        .dir.display(),
        .lock.display(),
        .holder.as_ref().map_or_else(|| "its holder recorded nothing".to_owned(), Holder::to_string)
    )]
    Locked {
        /// The store's directory.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// What the holder recorded in the lock file, if it could be read.
        holder: Option<Holder>,
    },
}

impl OffsetStoreError {
    /// Whether trying again later may succeed (a write may, after space is freed; a lock may,
    /// once its holder stopped; unusable files and directories need an operator).
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Write { .. } | Self::Locked { .. } => true,
            Self::Unusable { .. } | Self::Unwritable { .. } => false,
        }
    }
}

/// Exclusive use of one [`LocalFileStore`], from [`LocalFileStore::lock`] until dropped.
#[derive(Debug)]
pub struct StoreLock {
    /// Holds the lock: closing the file releases it.
    file: File,
}

impl StoreLock {
    /// Records in the lock file what its holder is doing, for a consumer that finds the lock
    /// taken ([`LocalFileStore::holder`]). One fixed-length write at the start of the file,
    /// never a truncation, so a reader sees a whole record or, at worst, one it cannot parse.
    ///
    /// # Errors
    /// The lock file cannot be written.
    pub fn mark(&self, phase: HolderPhase) -> io::Result<()> {
        let record = Holder {
            phase,
            pid: std::process::id(),
        }
        .record();
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&record)?;
        file.flush()
    }
}

/// What the holder of a store's lock is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderPhase {
    /// Consuming; it will not let go of the store.
    Running,
    /// Shutting down; the lock is free once it has saved its offsets and exited.
    Draining,
}

impl HolderPhase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Draining => "draining",
        }
    }
}

/// The holder of a store's lock, as it recorded itself in the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// What it is doing.
    pub phase: HolderPhase,
    /// Its process id (in its own PID namespace: another container's ids mean nothing here).
    pub pid: u32,
}

impl Holder {
    /// Bytes of the record: every record has this length, so a new one covers the old.
    const RECORD_LEN: usize = 32;

    /// `<phase> pid=<pid>`, padded with spaces to [`Self::RECORD_LEN`] and ended by a newline.
    fn record(self) -> Vec<u8> {
        // At most 23 characters ("draining pid=4294967295"), so the padding always fills it.
        let text = format!("{} pid={}", self.phase.as_str(), self.pid);
        format!("{text:<width$}\n", width = Self::RECORD_LEN - 1).into_bytes()
    }

    /// Reads a record; `None` for anything else (an empty file, an older version's, a torn
    /// read).
    fn parse(bytes: &[u8]) -> Option<Self> {
        let record = bytes.get(..Self::RECORD_LEN)?;
        if record.last() != Some(&b'\n') {
            return None;
        }
        let text = std::str::from_utf8(record).ok()?;
        let mut words = text.split_whitespace();
        let phase = match words.next()? {
            "running" => HolderPhase::Running,
            "draining" => HolderPhase::Draining,
            _ => return None,
        };
        let pid = words.next()?.strip_prefix("pid=")?.parse().ok()?;
        words.next().is_none().then_some(Self { phase, pid })
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {}, {}", self.pid, self.phase.as_str())
    }
}

/// Offsets of one group in BROADCASTING mode, kept in a local file (Java
/// `LocalFileOffsetStore`). See the module documentation for the write protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFileStore {
    dir: PathBuf,
}

impl LocalFileStore {
    /// The offset file's name.
    pub const FILE_NAME: &'static str = "offsets.json";

    /// The store of `group` under `offset_store_dir` (Java
    /// `rocketmq.client.localOffsetStoreDir`, default `$HOME/.rocketmq_offsets`):
    /// `<offset_store_dir>/<group>/offsets.json`, or
    /// `<offset_store_dir>/<instance>/<group>/offsets.json` with an `instance` name, which lets
    /// several consumers of one group share `offset_store_dir` with a file each. Both names are
    /// used as path components: both must pass [`valid_path_component`].
    pub fn new(offset_store_dir: impl AsRef<Path>, instance: Option<&str>, group: &str) -> Self {
        let root = offset_store_dir.as_ref();
        let parent = match instance {
            Some(instance) => root.join(instance),
            None => root.to_owned(),
        };
        Self {
            dir: parent.join(group),
        }
    }

    /// The directory holding `offsets.json` and its backup.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/offsets.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(Self::FILE_NAME)
    }

    /// `<dir>/offsets.json.bak`, the previous good content.
    pub fn backup_path(&self) -> PathBuf {
        self.dir.join(format!("{}.bak", Self::FILE_NAME))
    }

    fn probe_path(&self) -> PathBuf {
        self.dir.join(format!("{}.probe", Self::FILE_NAME))
    }

    fn temp_path(&self) -> PathBuf {
        self.dir.join(format!("{}.tmp", Self::FILE_NAME))
    }

    fn backup_temp_path(&self) -> PathBuf {
        self.dir.join(format!("{}.bak.tmp", Self::FILE_NAME))
    }

    /// `<dir>/.lock`, the file [`LocalFileStore::lock`] locks.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(".lock")
    }

    /// Creates the store's directory and takes the store's exclusive lock, without waiting.
    /// Take it before [`load`](Self::load) and keep it until the last
    /// [`save`](Self::save): see the module documentation.
    ///
    /// # Errors
    ///
    /// [`OffsetStoreError::Locked`] when another consumer holds the lock;
    /// [`OffsetStoreError::Unwritable`] naming the directory or lock file that could not be
    /// created or locked.
    pub fn lock(&self) -> Result<StoreLock, OffsetStoreError> {
        create_dir_durable(&self.dir, fsync_dir)
            .map_err(|(path, source)| self.unwritable(&path, source))?;
        let path = self.lock_path();
        let write_error = |source| self.unwritable(&path, source);
        // Never truncated: the file carries no data, only the lock.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(write_error)?;
        match file.try_lock() {
            Ok(()) => {
                let lock = StoreLock { file };
                lock.mark(HolderPhase::Running).map_err(write_error)?;
                Ok(lock)
            }
            Err(TryLockError::WouldBlock) => Err(OffsetStoreError::Locked {
                dir: self.dir.clone(),
                holder: self.holder(),
                lock: path,
            }),
            Err(TryLockError::Error(source)) => Err(write_error(source)),
        }
    }

    /// What the holder of the lock last recorded ([`StoreLock::mark`]); `None` when the lock
    /// file is missing or holds no record (an older version's holder, a torn read).
    pub fn holder(&self) -> Option<Holder> {
        let mut bytes = [0u8; Holder::RECORD_LEN];
        let mut file = File::open(self.lock_path()).ok()?;
        file.read_exact(&mut bytes).ok()?;
        Holder::parse(&bytes)
    }

    /// Checks that a save can create its files here: creates, writes, fsyncs and removes a
    /// probe file beside the ones a save writes. The lock file alone does not show it: once
    /// created, it opens even in a directory that no longer accepts new files (permissions
    /// changed, a full disk), where every save would fail. Takes the lock: only its holder
    /// writes in the store's directory.
    ///
    /// # Errors
    ///
    /// [`OffsetStoreError::Unwritable`] naming the file that could not be written or removed.
    pub fn check_writable(&self, _lock: &StoreLock) -> Result<(), OffsetStoreError> {
        // Not the temporary file of saves: a consumer that just took the lock from one that
        // exited must not touch a file the other's last save might still be writing.
        let temp = self.probe_path();
        let probe = || -> io::Result<()> {
            let mut file = File::create(&temp)?;
            file.write_all(b"{}")?;
            file.sync_all()?;
            fs::remove_file(&temp)
        };
        probe().map_err(|source| self.unwritable(&temp, source))
    }

    fn unwritable(&self, path: &Path, source: io::Error) -> OffsetStoreError {
        OffsetStoreError::Unwritable {
            dir: self.dir.clone(),
            path: path.to_owned(),
            source,
        }
    }

    /// Reads the stored offsets: `offsets.json`, or `offsets.json.bak` if that is missing or
    /// unusable (with a warning naming the file). Neither file existing is a new consumer: an
    /// empty table.
    ///
    /// # Errors
    ///
    /// [`OffsetStoreError::Unusable`] when a file exists but neither it nor the backup loads.
    pub fn load(&self) -> Result<Vec<(MessageQueue, i64)>, OffsetStoreError> {
        let path = self.path();
        let fault = match read_table(&path) {
            Ok(table) => return Ok(table),
            Err(fault) => fault,
        };
        let backup = self.backup_path();
        match (fault, read_table(&backup)) {
            (FileFault::Missing, Err(FileFault::Missing)) => Ok(Vec::new()),
            (fault, Ok(table)) => {
                tracing::warn!(
                    path = %path.display(),
                    backup = %backup.display(),
                    %fault,
                    "Offset file is unusable; loaded its backup."
                );
                Ok(table)
            }
            (fault, Err(backup_fault)) => Err(OffsetStoreError::Unusable {
                path,
                fault,
                backup,
                backup_fault,
            }),
        }
    }

    /// Replaces the stored offsets with `offsets`, atomically: the current file (if it loads)
    /// is copied to `offsets.json.bak`, the new content goes to `offsets.json.tmp`, is fsynced
    /// and renamed over `offsets.json`, and the directory is fsynced so the rename is durable.
    /// A crash at any point leaves a loadable `offsets.json` or `.bak`. Saves of one directory
    /// must not overlap (they share the temporary file): callers serialise them.
    ///
    /// # Errors
    ///
    /// [`OffsetStoreError::Write`] naming the file that could not be written.
    pub fn save(&self, offsets: &[(MessageQueue, i64)]) -> Result<(), OffsetStoreError> {
        // Normally there since `lock`; recreated durably if removed while running.
        create_dir_durable(&self.dir, fsync_dir)
            .map_err(|(path, source)| OffsetStoreError::Write { path, source })?;
        let path = self.path();
        match read_table_bytes(&path) {
            // Only content that loads is worth keeping: copying a corrupt file over a good
            // backup would destroy the one fallback we have.
            Ok(bytes) => {
                // Renamed into place like the file itself: written in place, a full disk left
                // the good backup truncated, and a backup this process may not write (left by
                // a root run) failed every save, though the save itself needs only the
                // directory. A backup that cannot be written does not stop the save.
                let temp = self.backup_temp_path();
                let backed_up = write_synced(&temp, &bytes).and_then(|()| {
                    fs::rename(&temp, self.backup_path()).map_err(|source| {
                        OffsetStoreError::Write {
                            path: self.backup_path(),
                            source,
                        }
                    })
                });
                if let Err(e) = backed_up {
                    tracing::warn!(error = %e, "Offset backup not written; saving the offsets without it.");
                }
            }
            Err(FileFault::Missing) => {}
            Err(fault) => tracing::warn!(
                path = %path.display(),
                %fault,
                "Offset file is unusable; keeping the previous backup."
            ),
        }
        let content = write_offset_table(offsets, true);
        let temp = self.temp_path();
        write_synced(&temp, content.as_bytes())?;
        fs::rename(&temp, &path).map_err(|source| OffsetStoreError::Write {
            path: path.clone(),
            source,
        })?;
        sync_dir(&self.dir)
    }
}

/// Whether `name` can be one component of a store path: not empty, not `.` or `..`, and
/// without a path separator or NUL, so it can neither escape the store's root nor nest deeper.
pub fn valid_path_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Reads and parses one offset file.
fn read_table(path: &Path) -> Result<Vec<(MessageQueue, i64)>, FileFault> {
    let bytes = read_bytes(path)?;
    parse_offset_table(&bytes).map_err(|err| FileFault::Parse(Box::new(err)))
}

/// Reads one offset file and returns its bytes if they parse.
fn read_table_bytes(path: &Path) -> Result<Vec<u8>, FileFault> {
    let bytes = read_bytes(path)?;
    parse_offset_table(&bytes).map_err(|err| FileFault::Parse(Box::new(err)))?;
    Ok(bytes)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, FileFault> {
    match fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Err(FileFault::Empty),
        Ok(bytes) => Ok(bytes),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(FileFault::Missing),
        Err(err) => Err(FileFault::Io(err)),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), OffsetStoreError> {
    let write = || -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|source| OffsetStoreError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), OffsetStoreError> {
    fsync_dir(dir).map_err(|source| OffsetStoreError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Fsyncs a directory, making the entries created or renamed in it durable. Only Unix can open
/// and fsync a directory.
fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    match File::open(dir)?.sync_all() {
        // Filesystems that cannot fsync a directory (some CIFS and FUSE mounts) say EINVAL;
        // their renames are as durable as they get, and failing on it failed every save after
        // a rename that worked (PostgreSQL ignores it for directories too).
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
        other => other?,
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates `dir` and its missing ancestors, then `sync`s the parent of each directory it
/// created: a directory's name is an entry in its parent, and until the parent is fsynced a
/// power loss can forget the new directory, and with it the offsets file fsynced inside it.
/// On error, returns the path that failed.
fn create_dir_durable(
    dir: &Path,
    mut sync: impl FnMut(&Path) -> io::Result<()>,
) -> Result<(), (PathBuf, io::Error)> {
    if fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    // The missing directories, deepest first. Anything but "not found" (a permission error, a
    // file in the way) ends the walk; create_dir_all reports it if it matters.
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(candidate) = next.filter(|d| !d.as_os_str().is_empty()) {
        match fs::metadata(candidate) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => missing.push(candidate),
            _ => break,
        }
        next = candidate.parent();
    }
    fs::create_dir_all(dir).map_err(|err| (dir.to_owned(), err))?;
    for created in missing.iter().rev() {
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync(parent).map_err(|err| (parent.to_owned(), err))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn mq(topic: &str, broker: &str, id: i32) -> MessageQueue {
        MessageQueue::new(topic, broker, id)
    }

    #[test]
    fn update_respects_increase_only_and_marks_dirty() {
        let table = OffsetTable::new();
        let q = mq("T", "b", 0);
        assert_eq!(table.read(&q), None);
        assert!(table.update(&q, 10, true));
        assert!(
            !table.update(&q, 5, true),
            "increase-only ignores a smaller value"
        );
        assert!(!table.update(&q, 10, true), "same value is no change");
        assert_eq!(table.read(&q), Some(10));
        assert!(table.update(&q, 5, false), "orderly/reset may move back");
        assert_eq!(table.read(&q), Some(5));
        assert_eq!(table.snapshot(), vec![(q.clone(), 5)]);
        assert_eq!(table.remove(&q), Some(5));
        assert!(table.is_empty());
    }

    #[test]
    fn table_is_shared_between_threads() {
        let table = Arc::new(OffsetTable::new());
        let q = mq("T", "b", 0);
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let table = Arc::clone(&table);
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        table.update(&q, i * 4 + t, true);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker thread panicked");
        }
        assert_eq!(table.read(&q), Some(399));
    }

    proptest! {
        #[test]
        fn increase_only_never_decreases(values in prop::collection::vec(-5..1000i64, 1..50)) {
            let table = OffsetTable::new();
            let q = mq("T", "b", 0);
            let mut max = i64::MIN;
            for v in values {
                let before = table.read(&q);
                table.update(&q, v, true);
                max = max.max(v);
                prop_assert_eq!(table.read(&q), Some(max));
                prop_assert!(before.is_none_or(|b| Some(b) <= table.read(&q)));
            }
        }
    }

    fn sample() -> Vec<(MessageQueue, i64)> {
        vec![
            (mq("T1", "broker-a", 0), 42),
            (mq("T1", "broker-a", 1), 17),
            (mq("%RETRY%g", "broker-b", 0), 0),
        ]
    }

    fn sorted(mut v: Vec<(MessageQueue, i64)>) -> Vec<(MessageQueue, i64)> {
        v.sort();
        v
    }

    #[test]
    fn path_is_the_group_under_the_root_or_under_an_instance_name() {
        // Nothing that changes across restarts (process id, IP address) is part of the path.
        let store = LocalFileStore::new("/home/u/.rocketmq_offsets", None, "g1");
        assert_eq!(
            store.path(),
            PathBuf::from("/home/u/.rocketmq_offsets/g1/offsets.json")
        );
        assert_eq!(
            store.backup_path(),
            PathBuf::from("/home/u/.rocketmq_offsets/g1/offsets.json.bak")
        );
        let named = LocalFileStore::new("/data/offsets", Some("pod-7"), "g1");
        assert_eq!(
            named.path(),
            PathBuf::from("/data/offsets/pod-7/g1/offsets.json")
        );
    }

    #[test]
    fn path_components_cannot_escape_the_root() {
        for good in ["g1", "%RETRY%g|x", "pod-7", "10.0.0.1@x", "a.b", "..."] {
            assert!(valid_path_component(good), "{good:?}");
        }
        for bad in ["", ".", "..", "a/b", "/abs", "a\\b", "nul\0"] {
            assert!(!valid_path_component(bad), "{bad:?}");
        }
    }

    #[test]
    fn missing_files_load_as_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "g");
        assert_eq!(store.load().expect("load"), Vec::new());
    }

    #[test]
    fn round_trip_and_backup_of_previous_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), Some("sidecar-1"), "g");
        store.save(&sample()).expect("first save");
        assert_eq!(sorted(store.load().expect("load")), sorted(sample()));
        assert!(
            !store.backup_path().exists(),
            "nothing to back up on the first save"
        );

        let second = vec![(mq("T1", "broker-a", 0), 50)];
        store.save(&second).expect("second save");
        assert_eq!(store.load().expect("load"), second);
        let backup = fs::read(store.backup_path()).expect("backup written");
        assert_eq!(
            sorted(parse_offset_table(&backup).expect("backup parses")),
            sorted(sample())
        );
        assert!(!store.temp_path().exists(), "temp file renamed away");
    }

    /// A backup that cannot be replaced (here a directory in its place; in the field, a file
    /// a root run left) failed every save before, though the save needs only the directory.
    #[test]
    fn a_backup_that_cannot_be_written_does_not_stop_the_save() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "g");
        store.save(&sample()).expect("first save");
        fs::create_dir(store.backup_path()).expect("a directory in the backup's place");
        let second = vec![(mq("T1", "broker-a", 0), 50)];
        store.save(&second).expect("saved without its backup");
        assert_eq!(store.load().expect("load"), second);
    }

    #[test]
    fn corrupt_file_falls_back_to_backup() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "g");
        store.save(&sample()).expect("save");
        store
            .save(&sample())
            .expect("save again, creating the backup");
        fs::write(store.path(), b"{\"offsetTable\":{{garbage").expect("corrupt");
        assert_eq!(sorted(store.load().expect("backup used")), sorted(sample()));
        // Saving now must not copy the garbage over the good backup.
        let newer = vec![(mq("T1", "broker-a", 0), 99)];
        store.save(&newer).expect("save over corrupt file");
        assert_eq!(store.load().expect("load"), newer);
        let backup = fs::read(store.backup_path()).expect("backup");
        assert_eq!(
            sorted(parse_offset_table(&backup).expect("backup still good")),
            sorted(sample())
        );
    }

    #[test]
    fn empty_file_falls_back_to_backup() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "g");
        store.save(&sample()).expect("save");
        store.save(&sample()).expect("save again");
        fs::write(store.path(), b"").expect("truncate");
        assert_eq!(sorted(store.load().expect("backup used")), sorted(sample()));
    }

    #[test]
    fn both_corrupt_is_an_error_naming_both_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "g");
        fs::create_dir_all(store.dir()).expect("dir");
        fs::write(store.path(), b"not json").expect("write");
        fs::write(store.backup_path(), b"{\"offsetTable\":[").expect("write");
        let err = store.load().expect_err("must not reset silently");
        let text = err.to_string();
        assert!(text.contains(&store.path().display().to_string()), "{text}");
        assert!(
            text.contains(&store.backup_path().display().to_string()),
            "{text}"
        );
        assert!(!err.is_retriable());
        assert!(matches!(
            err,
            OffsetStoreError::Unusable {
                fault: FileFault::Parse(_),
                backup_fault: FileFault::Parse(_),
                ..
            }
        ));
    }

    #[test]
    fn corrupt_file_without_backup_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), None, "g");
        fs::create_dir_all(store.dir()).expect("dir");
        fs::write(store.path(), b"\x00\x01").expect("write");
        let err = store.load().expect_err("no silent reset");
        assert!(matches!(
            err,
            OffsetStoreError::Unusable {
                backup_fault: FileFault::Missing,
                ..
            }
        ));
    }

    #[test]
    fn write_error_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A file where the store's directory should be.
        let blocker = dir.path().join("c");
        fs::write(&blocker, b"").expect("write");
        let store = LocalFileStore::new(dir.path(), Some("c"), "g");
        let err = store.save(&sample()).expect_err("cannot create dir");
        assert!(err.is_retriable());
        assert!(
            err.to_string().contains(&store.dir().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn holder_records_have_one_length_and_read_back() {
        for phase in [HolderPhase::Running, HolderPhase::Draining] {
            for pid in [0, 1, u32::MAX] {
                let holder = Holder { phase, pid };
                let record = holder.record();
                assert_eq!(record.len(), Holder::RECORD_LEN, "{holder}");
                assert_eq!(Holder::parse(&record), Some(holder));
            }
        }
        let padded = |text: &str| format!("{text:<31}\n").into_bytes();
        assert_eq!(
            Holder::parse(&padded("draining pid=7")),
            Some(Holder {
                phase: HolderPhase::Draining,
                pid: 7
            })
        );
        // What older versions left (an empty file), a torn or cut record and other text are no
        // record.
        let mut unended = padded("running pid=12");
        unended[31] = b' ';
        for bytes in [
            Vec::new(),
            unended,
            padded("running pid=12")[..20].to_vec(),
            padded(""),
            padded("drain pid=1"),
            padded("running pid=x"),
            padded("running pid=-1"),
            padded("running pid=1 extra"),
        ] {
            assert_eq!(
                Holder::parse(&bytes),
                None,
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path().join("new"), Some("i"), "g");
        let held = store.lock().expect("first lock, creating the directories");
        assert!(store.lock_path().exists());
        let me = std::process::id();
        assert_eq!(
            store.holder(),
            Some(Holder {
                phase: HolderPhase::Running,
                pid: me
            })
        );
        // A separate open of the same file, as another process would have.
        let err = store.lock().expect_err("second lock of the same store");
        assert!(
            matches!(&err, OffsetStoreError::Locked { lock, .. } if *lock == store.lock_path())
        );
        let text = err.to_string();
        assert!(
            text.contains(&store.lock_path().display().to_string()),
            "{text}"
        );
        assert!(text.contains("instance_name"), "{text}");
        assert!(text.contains(&format!("process {me}, running")), "{text}");
        assert!(err.is_retriable());
        // A draining holder says so to the next one.
        held.mark(HolderPhase::Draining).expect("mark");
        let err = store.lock().expect_err("still held while draining");
        assert!(
            matches!(&err, OffsetStoreError::Locked { holder: Some(h), .. } if h.phase == HolderPhase::Draining),
            "{err:?}"
        );
        // Other groups and other instance names are other stores.
        let _other_group = LocalFileStore::new(dir.path().join("new"), Some("i"), "h")
            .lock()
            .expect("another group");
        let _other_instance = LocalFileStore::new(dir.path().join("new"), Some("j"), "g")
            .lock()
            .expect("another instance");
        drop(held);
        let _again = store.lock().expect("free again once dropped");
    }

    #[test]
    fn a_store_that_cannot_be_written_is_found_before_any_save() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A file where a directory of the store should be: nothing can be created below it.
        fs::write(dir.path().join("blocker"), b"").expect("write");
        let store = LocalFileStore::new(dir.path().join("blocker"), None, "g");
        let err = store.lock().expect_err("no directory, no lock");
        assert!(
            matches!(&err, OffsetStoreError::Unwritable { path, .. } if path == store.dir()),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&store.dir().display().to_string()), "{text}");
        assert!(text.contains("offset_store_path"), "{text}");
        assert!(!err.is_retriable());

        // The directory and lock file exist, but no file can be created beside them (here: a
        // directory is in the probe's way; in production: permissions or a full disk).
        let store = LocalFileStore::new(dir.path(), None, "h");
        let lock = store.lock().expect("lock");
        store
            .check_writable(&lock)
            .expect("an ordinary directory is writable");
        assert!(!store.probe_path().exists(), "the probe cleans up");
        assert!(
            !store.temp_path().exists(),
            "the probe leaves saves' files alone"
        );
        fs::create_dir(store.probe_path()).expect("dir in the way");
        let err = store
            .check_writable(&lock)
            .expect_err("probe file cannot be created");
        assert!(
            err.to_string()
                .contains(&store.probe_path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn new_directories_are_made_durable_in_their_parents() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let target = root.join("a").join("b").join("c");
        let mut synced = Vec::new();
        create_dir_durable(&target, |d| {
            synced.push(d.to_owned());
            fsync_dir(d)
        })
        .expect("created");
        assert!(target.is_dir());
        // Each created directory's parent, top down: root holds `a`, `a` holds `b`, `b` holds
        // `c` (c's own entries are fsynced by the save that renames into it).
        assert_eq!(
            synced,
            vec![root.to_owned(), root.join("a"), root.join("a").join("b")]
        );

        synced.clear();
        create_dir_durable(&target, |d| {
            synced.push(d.to_owned());
            Ok(())
        })
        .expect("exists");
        assert!(synced.is_empty(), "nothing created, nothing to sync");

        // A failing fsync is an error naming the directory, not a silent success.
        let err = create_dir_durable(&root.join("x").join("y"), |_| {
            Err(io::Error::other("fsync failed"))
        })
        .expect_err("sync failure reported");
        assert_eq!(err.0, root.to_owned());
    }

    /// The file a Java broadcasting consumer writes: fastjson pretty format, tab-indented,
    /// MessageQueue objects as keys (section 7.9).
    const JAVA_PRETTY: &str = "{\n\t\"offsetTable\":{{\n\t\t\t\"brokerName\":\"broker-a\",\n\t\t\t\"queueId\":0,\n\t\t\t\"topic\":\"T1\"\n\t\t}:42,{\n\t\t\t\"brokerName\":\"broker-a\",\n\t\t\t\"queueId\":1,\n\t\t\t\"topic\":\"T1\"\n\t\t}:17,{\n\t\t\t\"brokerName\":\"broker-b\",\n\t\t\t\"queueId\":0,\n\t\t\t\"topic\":\"%RETRY%g\"\n\t\t}:0\n\t}\n}";

    #[test]
    fn reads_a_java_written_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path(), Some("sidecar-1"), "g");
        fs::create_dir_all(store.dir()).expect("dir");
        fs::write(store.path(), JAVA_PRETTY).expect("write");
        assert_eq!(sorted(store.load().expect("load")), sorted(sample()));
    }
}
