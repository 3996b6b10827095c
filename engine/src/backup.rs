//! Online backup and restore of the store.
//!
//! A backup is a directory: one file per keyspace holding its keys and values in key
//! order, read from one snapshot of the whole store (fjall's cross-keyspace snapshot, so
//! every commit group is in it whole or not at all, while writes go on), and
//! `manifest.json`, written last, with the delta head at the snapshot, the formats, and
//! each file's record count, size and SHA-256. Every delta up to the manifest's
//! `delta_head` — and so every message acknowledged before it — is in the backup.
//!
//! The files are Confab's own simple format, not fjall's table files: restoring
//! verifies every checksum and the key order first, then bulk-loads the keyspaces into a
//! new store with fjall's ingestion (sorted input written straight to tables). The search
//! index is not copied: a restored store has none, and the server rebuilds it from the
//! store at its first start.
//!
//! A keyspace file is a sequence of records: key length and value length (big-endian
//! `u32` each), then the key and the value.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fjall::Readable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalogue::{self, Ks};
use crate::format::{self, FORMAT_VERSION};
use crate::store::{Store, StoreOptions};

/// The layout of a backup directory this binary writes (and the newest it reads).
pub const BACKUP_FORMAT: u32 = 1;
/// The manifest's file name; a directory without one is not a finished backup.
pub const MANIFEST: &str = "manifest.json";

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub backup_format: u32,
    /// The store format of the data (see [`crate::format`]); 0 for a store from before
    /// versioning.
    pub store_format: u32,
    /// The Confab release that made it.
    pub confab_version: String,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_at: String,
    /// Every delta up to this offset (and every write acknowledged with it) is in the
    /// backup.
    pub delta_head: u64,
    pub keyspaces: Vec<KeyspaceFile>,
}

impl Manifest {
    /// Keys and values in the backup.
    pub fn records(&self) -> u64 {
        self.keyspaces.iter().map(|k| k.records).sum()
    }

    /// Bytes of its keyspace files.
    pub fn bytes(&self) -> u64 {
        self.keyspaces.iter().map(|k| k.bytes).sum()
    }
}

/// One keyspace's file in a backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyspaceFile {
    pub keyspace: String,
    pub file: String,
    pub records: u64,
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} must be an absolute path")]
    NotAbsolute(PathBuf),
    #[error("{0} exists and is not an empty directory: refusing to write into it")]
    NotEmpty(PathBuf),
    #[error("{path} cannot be used: {source}")]
    Unusable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} has no manifest.json: not a backup, or one that did not finish")]
    NoManifest(PathBuf),
    #[error("manifest.json cannot be read: {0}")]
    BadManifest(String),
    #[error("the backup is in backup format {found}, newer than this binary's {supported}: restore it with the release that made it ({release})")]
    NewerBackup {
        found: u32,
        supported: u32,
        release: String,
    },
    #[error("the backup holds store format {found}, newer than this binary's {supported}: restore it with the release that made it ({release})")]
    NewerStore {
        found: u32,
        supported: u32,
        release: String,
    },
    #[error("{file} is damaged: {why}")]
    Damaged { file: String, why: String },
    #[error(transparent)]
    Store(#[from] crate::Error),
}

impl From<fjall::Error> for BackupError {
    fn from(e: fjall::Error) -> Self {
        BackupError::Store(e.into())
    }
}

type Result<T> = std::result::Result<T, BackupError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a backup of `store` as it is now into `to` (absolute; created, or empty),
/// while writes go on. Blocking; holds a snapshot of the store until it returns (the
/// store keeps the versions it sees meanwhile).
pub fn backup(store: &Store, to: &Path, confab_version: &str) -> Result<Manifest> {
    empty_dir(to)?;
    // Two backups into one directory: the second finds it taken.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to.join(CLAIM))
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(BackupError::NotEmpty(to.to_path_buf()));
        }
        Err(source) => {
            return Err(BackupError::Unusable {
                path: to.to_path_buf(),
                source,
            })
        }
    }
    let written = write_backup(store, to, confab_version);
    let _ = std::fs::remove_file(to.join(CLAIM));
    if written.is_err() {
        // Nothing of a failed backup is usable (it has no manifest): leave the directory
        // empty, as it was.
        if let Ok(entries) = std::fs::read_dir(to) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    written
}

fn write_backup(store: &Store, to: &Path, confab_version: &str) -> Result<Manifest> {
    let snapshot = store.snapshot();
    let meta = store.ks(Ks::Meta);
    let delta_head = snapshot
        .get(meta, catalogue::META_DELTA_HEAD)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    let store_format = snapshot
        .get(meta, format::META_FORMAT_VERSION)?
        .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes))
        .unwrap_or(FORMAT_VERSION);
    let created_at = crate::time::to_rfc3339(crate::time::now_millis());
    let mut keyspaces = Vec::with_capacity(Ks::ALL.len());
    for ks in Ks::ALL {
        let file = format!("{}.kv", ks.name());
        let path = to.join(&file);
        let mut out = HashingWriter::new(File::create(&path).map_err(io(&path))?);
        let mut records = 0u64;
        for kv in snapshot.iter(store.ks(ks)) {
            let (key, value) = kv.into_inner()?;
            write_record(&mut out, &key, &value).map_err(io(&path))?;
            records += 1;
        }
        let (bytes, sha256) = out.finish().map_err(io(&path))?;
        keyspaces.push(KeyspaceFile {
            keyspace: ks.name().to_string(),
            file,
            records,
            bytes,
            sha256,
        });
    }
    drop(snapshot);
    let manifest = Manifest {
        backup_format: BACKUP_FORMAT,
        store_format,
        confab_version: confab_version.to_string(),
        created_at,
        delta_head,
        keyspaces,
    };
    // The manifest last, atomically: a directory with one holds a whole backup.
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::BadManifest(e.to_string()))?;
    let partial = to.join(format!("{MANIFEST}.partial"));
    let mut file = File::create(&partial).map_err(io(&partial))?;
    file.write_all(&json).map_err(io(&partial))?;
    file.sync_all().map_err(io(&partial))?;
    let path = to.join(MANIFEST);
    std::fs::rename(&partial, &path).map_err(io(&path))?;
    sync_dir(to)?;
    Ok(manifest)
}

/// Reads a backup's manifest and checks every file against it (size, checksum, records
/// whole and in key order) without writing anything.
pub fn verify(from: &Path) -> Result<Manifest> {
    let manifest = read_manifest(from)?;
    for entry in &manifest.keyspaces {
        read_keyspace_file(from, entry, |_, _| Ok(()))?;
    }
    Ok(manifest)
}

/// Makes a data directory at `data_dir` (absent or empty) from the backup in `from`:
/// verifies the whole backup first, then loads every keyspace. `confab serve` starts on
/// the result (migrating it if the backup is of an older store format, rebuilding the
/// search index).
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest> {
    let manifest = verify(from)?;
    empty_dir(data_dir)?;
    // Loaded beside it and moved in at the end: a restore cut short leaves no data
    // directory a server would start on as if it were whole.
    let partial = partial_store(data_dir);
    let _ = std::fs::remove_dir_all(&partial);
    let loaded = load(from, &manifest, &partial);
    if loaded.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
        return loaded.map(|_| manifest);
    }
    let store = data_dir.join("store");
    std::fs::rename(partial.join("store"), &store).map_err(io(&store))?;
    let _ = std::fs::remove_dir_all(&partial);
    sync_dir(data_dir)?;
    Ok(manifest)
}

/// Where [`restore`] loads a store before moving it into `data_dir`.
fn partial_store(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    data_dir.with_file_name(format!(".{name}.restoring"))
}

fn load(from: &Path, manifest: &Manifest, dir: &Path) -> Result<()> {
    let (db, keyspaces) = crate::store::open_keyspaces(dir, &StoreOptions::default())?;
    for entry in &manifest.keyspaces {
        let ks = Ks::ALL
            .iter()
            .position(|ks| ks.name() == entry.keyspace)
            .map(|i| &keyspaces[i])
            .ok_or_else(|| BackupError::Damaged {
                file: entry.file.clone(),
                why: format!("unknown keyspace {:?}", entry.keyspace),
            })?;
        if entry.records == 0 {
            continue;
        }
        let mut ingestion = ks.start_ingestion()?;
        read_keyspace_file(from, entry, |key, value| {
            ingestion.write(key, value)?;
            Ok(())
        })?;
        ingestion.finish()?;
    }
    db.persist(fjall::PersistMode::SyncAll)?;
    // Closed (its workers stopped) before the caller moves the directory.
    drop(keyspaces);
    drop(db);
    Ok(())
}

fn read_manifest(from: &Path) -> Result<Manifest> {
    let path = from.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NoManifest(from.to_path_buf()));
        }
        Err(e) => return Err(io(&path)(e)),
    };
    parse_manifest(&bytes)
}

/// Parses and checks a manifest's text: a format this release reads, known keyspaces each
/// listed once, plain file names. Public for the fuzz target.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| BackupError::BadManifest(e.to_string()))?;
    if manifest.backup_format > BACKUP_FORMAT {
        return Err(BackupError::NewerBackup {
            found: manifest.backup_format,
            supported: BACKUP_FORMAT,
            release: manifest.confab_version,
        });
    }
    if manifest.store_format > FORMAT_VERSION {
        return Err(BackupError::NewerStore {
            found: manifest.store_format,
            supported: FORMAT_VERSION,
            release: manifest.confab_version,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for entry in &manifest.keyspaces {
        if !Ks::ALL.iter().any(|ks| ks.name() == entry.keyspace) {
            return Err(BackupError::BadManifest(format!(
                "unknown keyspace {:?}",
                entry.keyspace
            )));
        }
        if !seen.insert(entry.keyspace.as_str()) {
            return Err(BackupError::BadManifest(format!(
                "keyspace {:?} listed twice",
                entry.keyspace
            )));
        }
        // Only a plain file name: a manifest cannot point outside its directory.
        let plain = Path::new(&entry.file)
            .file_name()
            .is_some_and(|name| name == entry.file.as_str());
        if !plain || entry.file.starts_with('.') {
            return Err(BackupError::BadManifest(format!(
                "{:?} is not a file name",
                entry.file
            )));
        }
    }
    Ok(manifest)
}

/// Reads one keyspace file, checking it against its manifest entry, and hands each record
/// to `each` in order. The checksum covers the whole file, so a damaged file is only known
/// at its end: [`restore`] calls [`verify`] before it loads anything.
fn read_keyspace_file(
    dir: &Path,
    entry: &KeyspaceFile,
    each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let path = dir.join(&entry.file);
    let damaged = |why: String| BackupError::Damaged {
        file: entry.file.clone(),
        why,
    };
    let file = File::open(&path).map_err(io(&path))?;
    let size = file.metadata().map_err(io(&path))?.len();
    if size != entry.bytes {
        return Err(damaged(format!(
            "{size} bytes where the manifest says {}",
            entry.bytes
        )));
    }
    read_records(BufReader::with_capacity(1 << 20, file), size, entry, each)
}

/// Reads the records of a keyspace file of `size` bytes from `input`, checking them
/// against `entry` (count, SHA-256) and handing each to `each` in order: keys non-empty and
/// strictly increasing, no record running past `size`. Public for the fuzz target.
pub fn read_records(
    input: impl Read,
    size: u64,
    entry: &KeyspaceFile,
    mut each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let damaged = |why: String| BackupError::Damaged {
        file: entry.file.clone(),
        why,
    };
    let path = Path::new(&entry.file);
    let mut input = HashingReader::new(input);
    let mut records = 0u64;
    let mut previous: Option<Vec<u8>> = None;
    loop {
        let mut header = [0u8; 8];
        match read_full(&mut input, &mut header).map_err(io(path))? {
            0 => break,
            8 => {}
            n => return Err(damaged(format!("a record header cut after {n} bytes"))),
        }
        let key_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let value_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as u64;
        if input.read_so_far() + key_len + value_len > size {
            return Err(damaged("a record runs past the end of the file".into()));
        }
        let mut key = vec![0u8; key_len as usize];
        let mut value = vec![0u8; value_len as usize];
        input.read_exact(&mut key).map_err(io(path))?;
        input.read_exact(&mut value).map_err(io(path))?;
        if key.is_empty() || previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(damaged(format!("keys out of order at record {records}")));
        }
        records += 1;
        each(key.clone(), value)?;
        previous = Some(key);
    }
    if records != entry.records {
        return Err(damaged(format!(
            "{records} records where the manifest says {}",
            entry.records
        )));
    }
    let sha256 = hex::encode(input.hasher.finalize());
    if sha256 != entry.sha256 {
        return Err(damaged(format!(
            "SHA-256 {sha256} where the manifest says {}",
            entry.sha256
        )));
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes one record as [`read_records`] reads it. Public for the fuzz target.
pub fn write_record(out: &mut impl Write, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    // fjall bounds keys to 64 KiB and values to 4 GiB; the store's own limits are lower.
    let key_len = u32::try_from(key.len()).map_err(std::io::Error::other)?;
    let value_len = u32::try_from(value.len()).map_err(std::io::Error::other)?;
    out.write_all(&key_len.to_be_bytes())?;
    out.write_all(&value_len.to_be_bytes())?;
    out.write_all(key)?;
    out.write_all(value)
}

/// Marks a backup directory as taken while a backup writes it (removed at the end).
const CLAIM: &str = ".confab-backup-in-progress";

/// Creates `dir` or checks that it is an empty directory.
fn empty_dir(dir: &Path) -> Result<()> {
    if !dir.is_absolute() {
        return Err(BackupError::NotAbsolute(dir.to_path_buf()));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|source| BackupError::Unusable {
                path: dir.to_path_buf(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(BackupError::NotEmpty(dir.to_path_buf()))
        }
        Err(source) => Err(BackupError::Unusable {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A buffered file writer that hashes and counts what it writes.
struct HashingWriter {
    out: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl HashingWriter {
    fn new(file: File) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Flushes and fsyncs; the bytes written and their SHA-256 in hex.
    fn finish(self) -> std::io::Result<(u64, String)> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((self.bytes, hex::encode(self.hasher.finalize())))
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A reader that hashes and counts what it reads.
struct HashingReader<R> {
    input: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    fn read_so_far(&self) -> u64 {
        self.read
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(dir, &StoreOptions::default()).expect("store opens")
    }

    fn contents(store: &Store, ks: Ks) -> Vec<(Vec<u8>, Vec<u8>)> {
        store
            .ks(ks)
            .iter()
            .map(|kv| {
                let (k, v) = kv.into_inner().expect("readable");
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    /// A store with something in several keyspaces, a file among them.
    fn filled(dir: &Path) -> Store {
        let store = store(dir);
        let mut batch = store.db().batch();
        for i in 0u32..500 {
            batch.insert(
                store.ks(Ks::ConvMsg),
                format!("conv-{i:05}").into_bytes(),
                format!("message {i}").into_bytes(),
            );
        }
        batch.insert(
            store.ks(Ks::Blob),
            b"file".to_vec(),
            (0..1_500_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        batch.insert(
            store.ks(Ks::Meta),
            catalogue::META_DELTA_HEAD.to_vec(),
            42u64.to_be_bytes().to_vec(),
        );
        batch.commit().expect("commit");
        store
    }

    #[test]
    fn a_restored_store_holds_exactly_what_the_backup_saw() {
        let dir = tempfile::tempdir().expect("dir");
        let original = filled(&dir.path().join("data"));
        let to = dir.path().join("backup");
        let manifest = backup(&original, &to, "test").expect("backup");
        assert_eq!(manifest.delta_head, 42);
        assert_eq!(manifest.store_format, FORMAT_VERSION);
        assert_eq!(manifest.keyspaces.len(), Ks::ALL.len());
        // 500 messages, the file, the head and the format version.
        assert_eq!(manifest.records(), 503);
        assert_eq!(verify(&to).expect("verifies"), manifest);

        let restored_dir = dir.path().join("restored");
        assert_eq!(restore(&to, &restored_dir).expect("restore"), manifest);
        let restored = store(&restored_dir);
        for ks in Ks::ALL {
            assert_eq!(contents(&restored, ks), contents(&original, ks), "{ks:?}");
        }
        assert_eq!(restored.delta_head().expect("head"), 42);
    }

    #[test]
    fn a_backup_taken_during_writes_holds_every_commit_group_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let original = store(&dir.path().join("data"));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, stop) = (original.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) || i < 200 {
                    i += 1;
                    // One group: a message, its conversation, and the head.
                    let mut batch = store.db().batch();
                    batch.insert(
                        store.ks(Ks::ConvMsg),
                        i.to_be_bytes().to_vec(),
                        b"m".to_vec(),
                    );
                    batch.insert(
                        store.ks(Ks::ConvState),
                        i.to_be_bytes().to_vec(),
                        b"c".to_vec(),
                    );
                    batch.insert(
                        store.ks(Ks::Meta),
                        catalogue::META_DELTA_HEAD.to_vec(),
                        i.to_be_bytes().to_vec(),
                    );
                    batch.commit().expect("commit");
                }
                i
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while original.delta_head().expect("head") <= 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never wrote"
            );
            std::thread::yield_now();
        }
        let to = dir.path().join("backup");
        let manifest = backup(&original, &to, "test").expect("backup");
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().expect("writer");

        let restored_dir = dir.path().join("restored");
        restore(&to, &restored_dir).expect("restore");
        let restored = store(&restored_dir);
        let head = manifest.delta_head;
        assert!(head > 50 && head <= written, "head {head} of {written}");
        let expected: Vec<Vec<u8>> = (1..=head).map(|i| i.to_be_bytes().to_vec()).collect();
        let keys = |ks| -> Vec<Vec<u8>> {
            contents(&restored, ks)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(keys(Ks::ConvMsg), expected);
        assert_eq!(keys(Ks::ConvState), expected);
    }

    #[test]
    fn a_damaged_backup_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("dir");
        let original = filled(&dir.path().join("data"));
        let to = dir.path().join("backup");
        backup(&original, &to, "test").expect("backup");
        let restored = dir.path().join("restored");

        // One byte of one value changed: same size, same records, another checksum.
        let path = to.join("conv_msg.kv");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let refused = restore(&to, &restored).expect_err("damaged");
        assert!(
            matches!(&refused, BackupError::Damaged { file, why } if file == "conv_msg.kv" && why.contains("SHA-256")),
            "{refused}"
        );
        assert!(!restored.exists(), "nothing written");

        // Cut short.
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        let refused = verify(&to).expect_err("truncated");
        assert!(matches!(refused, BackupError::Damaged { .. }), "{refused}");

        // No manifest: not a finished backup.
        std::fs::remove_file(to.join(MANIFEST)).expect("remove");
        assert!(matches!(verify(&to), Err(BackupError::NoManifest(_))));
    }

    #[test]
    fn a_manifest_cannot_name_files_outside_its_directory_or_come_from_a_newer_release() {
        let dir = tempfile::tempdir().expect("dir");
        let original = filled(&dir.path().join("data"));
        let to = dir.path().join("backup");
        let manifest = backup(&original, &to, "test").expect("backup");
        let rewrite = |m: &Manifest| {
            std::fs::write(to.join(MANIFEST), serde_json::to_vec(m).expect("json")).expect("write");
        };
        let mut outside = manifest.clone();
        outside.keyspaces[0].file = "../data/store/0.jnl".into();
        rewrite(&outside);
        assert!(matches!(verify(&to), Err(BackupError::BadManifest(_))));

        let mut unknown = manifest.clone();
        unknown.keyspaces[0].keyspace = "no_such_keyspace".into();
        rewrite(&unknown);
        assert!(matches!(verify(&to), Err(BackupError::BadManifest(_))));
        let mut twice = manifest.clone();
        twice.keyspaces[1].keyspace = twice.keyspaces[0].keyspace.clone();
        rewrite(&twice);
        assert!(matches!(verify(&to), Err(BackupError::BadManifest(_))));

        let mut newer = manifest.clone();
        newer.store_format = FORMAT_VERSION + 1;
        newer.confab_version = "9.9.9".into();
        rewrite(&newer);
        let refused = verify(&to).expect_err("newer");
        assert!(refused.to_string().contains("9.9.9"), "{refused}");

        rewrite(&manifest);
        verify(&to).expect("the original manifest verifies");
    }

    #[test]
    fn backups_go_only_into_an_absolute_empty_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let original = filled(&dir.path().join("data"));
        assert!(matches!(
            backup(&original, Path::new("relative/dir"), "test"),
            Err(BackupError::NotAbsolute(_))
        ));
        let busy = dir.path().join("busy");
        std::fs::create_dir(&busy).expect("mkdir");
        std::fs::write(busy.join("other"), b"x").expect("write");
        assert!(matches!(
            backup(&original, &busy, "test"),
            Err(BackupError::NotEmpty(_))
        ));
        assert_eq!(
            std::fs::read_dir(&busy).expect("ls").count(),
            1,
            "nothing added"
        );
        // Restoring over an existing data directory is refused the same way.
        let to = dir.path().join("backup");
        backup(&original, &to, "test").expect("backup");
        assert!(matches!(
            restore(&to, &dir.path().join("data")),
            Err(BackupError::NotEmpty(_))
        ));
    }
}
