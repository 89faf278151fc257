//! Backends of the `RunpackStore` seam: a directory confined to one root, and memory.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::store::{RunpackKey, RunpackStore, StoreError};

use crate::confine::{check_relative, confined};

/// A path segment safe on any filesystem: kept when it is plain ASCII, otherwise hex-encoded
/// behind `~`, so no id can name `..`, a separator or a reserved name.
fn segment(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && !id.starts_with('~')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    match (plain, id.len()) {
        (true, _) => id.to_owned(),
        // Hex doubles the length; past a safe file-name length, a digest names the segment.
        (false, n) if n <= 100 => format!("~{}", hex::encode(id)),
        (false, _) => format!(
            "~~{}",
            crate::hashing::HashAlgorithm::Sha256
                .digest(id.as_bytes())
                .value
        ),
    }
}

fn key_dir(key: &RunpackKey) -> String {
    format!(
        "t{}/n{}/{}/{}",
        key.run.tenant_id,
        key.run.namespace_id,
        segment(key.run.run_id.as_str()),
        segment(&key.export_id)
    )
}

fn invalid(refusal: crate::confine::PathRefusal) -> StoreError {
    let message = refusal.to_string();
    StoreError::Invalid {
        field: "path",
        message,
    }
}

/// Runpacks as files under one root directory: `t{tenant}/n{namespace}/{run}/{export}/{path}`.
/// Paths are relative, without `..`, and never cross a symlink; each file is written to a
/// temporary name, synced and renamed, and its directory synced, so a reader never sees it
/// half-written and a published file survives a crash. Directories are `0700`, files `0600`.
#[derive(Debug)]
pub struct FsRunpackStore {
    root: PathBuf,
    temp_seq: AtomicU64,
}

impl FsRunpackStore {
    /// A store rooted at `root`, created if missing.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the root cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        crate::at_rest::create_private_dir_all(&root)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", root.display())))?;
        Ok(Self {
            root,
            temp_seq: AtomicU64::new(0),
        })
    }

    /// The directory holding one runpack, for offline verification with a
    /// [`DirReader`](super::DirReader).
    #[must_use]
    pub fn runpack_dir(&self, key: &RunpackKey) -> PathBuf {
        self.root.join(key_dir(key))
    }

    /// Where a stored file is, as callers see it: relative to the directory holding the store
    /// (`runpacks/t1/n1/run/rev4-…/manifest.json` under a data directory), never the host's
    /// absolute path.
    fn location(&self, key: &RunpackKey, path: &str) -> String {
        let base = self
            .root
            .file_name()
            .map_or_else(String::new, |name| format!("{}/", name.to_string_lossy()));
        format!("{base}{}/{path}", key_dir(key))
    }

    fn write_atomically(&self, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let dir = target
            .parent()
            .ok_or_else(|| std::io::Error::other("no parent directory"))?;
        crate::at_rest::create_private_dir_all(dir)?;
        let temp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.temp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = crate::at_rest::private_file_options()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, target)?;
            // The rename is durable only once the directory holding it is.
            crate::at_rest::sync_dir(dir)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }
}

#[async_trait]
impl RunpackStore for FsRunpackStore {
    async fn put_file(
        &self,
        key: &RunpackKey,
        path: &str,
        bytes: &[u8],
    ) -> Result<String, StoreError> {
        check_relative(path).map_err(invalid)?;
        let full = confined(&self.root, &format!("{}/{path}", key_dir(key))).map_err(invalid)?;
        self.write_atomically(&full, bytes)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", full.display())))?;
        Ok(self.location(key, path))
    }

    async fn get_file(&self, key: &RunpackKey, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_relative(path).map_err(invalid)?;
        let full = confined(&self.root, &format!("{}/{path}", key_dir(key))).map_err(invalid)?;
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Unavailable(format!("{}: {e}", full.display()))),
        }
    }

    async fn list_files(&self, key: &RunpackKey) -> Result<Vec<String>, StoreError> {
        let dir = confined(&self.root, &key_dir(key)).map_err(invalid)?;
        let mut found = Vec::new();
        let mut pending = vec![(dir.clone(), String::new())];
        while let Some((at, prefix)) = pending.pop() {
            let entries = match std::fs::read_dir(&at) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Unavailable(format!("{}: {e}", at.display()))),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let kind = entry
                    .file_type()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if kind.is_dir() {
                    pending.push((entry.path(), rel));
                } else if kind.is_file() && !name.starts_with(".tmp-") {
                    found.push(rel);
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

/// Runpacks held in memory.
#[derive(Debug, Default)]
pub struct MemoryRunpackStore {
    files: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

#[async_trait]
impl RunpackStore for MemoryRunpackStore {
    async fn put_file(
        &self,
        key: &RunpackKey,
        path: &str,
        bytes: &[u8],
    ) -> Result<String, StoreError> {
        check_relative(path).map_err(invalid)?;
        let mut files = self
            .files
            .lock()
            .map_err(|_| StoreError::Unavailable("lock poisoned".into()))?;
        files.insert((key_dir(key), path.to_owned()), bytes.to_vec());
        Ok(format!("memory://{}/{path}", key_dir(key)))
    }

    async fn get_file(&self, key: &RunpackKey, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_relative(path).map_err(invalid)?;
        let files = self
            .files
            .lock()
            .map_err(|_| StoreError::Unavailable("lock poisoned".into()))?;
        Ok(files.get(&(key_dir(key), path.to_owned())).cloned())
    }

    async fn list_files(&self, key: &RunpackKey) -> Result<Vec<String>, StoreError> {
        let files = self
            .files
            .lock()
            .map_err(|_| StoreError::Unavailable("lock poisoned".into()))?;
        let dir = key_dir(key);
        Ok(files
            .keys()
            .filter(|(d, _)| *d == dir)
            .map(|(_, p)| p.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_ids_are_encoded() {
        assert_eq!(segment("run-1.a_b"), "run-1.a_b");
        assert_eq!(segment(".."), "~2e2e");
        assert_eq!(segment("a/b"), "~612f62");
        assert_eq!(segment("~x"), "~7e78");
        let long = "é".repeat(64);
        assert_eq!(segment(&long).len(), 66, "a long id is named by its digest");
        assert_ne!(segment(&long), segment(&"è".repeat(64)));
    }
}
