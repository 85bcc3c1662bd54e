//! Resume state: one small JSON file per (file, server) pair, naming the open upload.
//!
//! The file name is a SHA-256 of the file's canonical path, size and modification time and the
//! server URL, so an edited or replaced file, or the same file sent to another server, starts a
//! fresh upload instead of resuming a stale one. Only IDs are kept here; which parts are stored is
//! always asked of the server.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What is remembered about an upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedUpload {
    pub upload_id: String,
    pub video_id: String,
    pub part_size: u64,
    /// File size when the upload was opened.
    pub size: u64,
}

/// The identity of a local file for keying resume state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    pub canonical_path: PathBuf,
    pub size: u64,
    /// `None` where the platform has no modification time.
    pub mtime: Option<SystemTime>,
}

impl FileIdentity {
    /// Reads the identity of `path` from the file system.
    pub fn of(path: &Path) -> Result<Self> {
        let io = |op, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let canonical_path = fs::canonicalize(path).map_err(|e| io("cannot open", e))?;
        let meta = fs::metadata(&canonical_path).map_err(|e| io("cannot read", e))?;
        if !meta.is_file() {
            return Err(io(
                "cannot upload",
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        Ok(FileIdentity {
            canonical_path,
            size: meta.len(),
            mtime: meta.modified().ok(),
        })
    }
}

/// The hex SHA-256 key of (canonical path, size, mtime, server URL).
pub fn state_key(file: &FileIdentity, server: &Url) -> String {
    let mut h = Sha256::new();
    // Length-prefix each field so no two inputs can produce the same byte string.
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"oxcast-upload-state-v1");
    field(file.canonical_path.as_os_str().as_encoded_bytes());
    field(&file.size.to_le_bytes());
    match file.mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => {
            field(&d.as_secs().to_le_bytes());
            field(&d.subsec_nanos().to_le_bytes());
        }
        None => field(b"no-mtime"),
    }
    field(server.as_str().as_bytes());
    hex::encode(h.finalize())
}

/// Where the state for `file` uploaded to `server` lives inside `state_dir`.
pub fn state_path(state_dir: &Path, file: &FileIdentity, server: &Url) -> PathBuf {
    state_dir.join(format!("{}.json", state_key(file, server)))
}

/// Reads a state file. A missing file is `Ok(None)`; so is an unreadable or corrupt one (logged),
/// since the worst outcome of ignoring it is uploading again.
pub fn load(path: &Path) -> Option<SavedUpload> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable upload state");
            return None;
        }
    };
    match serde_json::from_slice(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring corrupt upload state");
            None
        }
    }
}

/// Writes a state file atomically (temporary file + rename), creating `state_dir` if needed.
pub fn save(path: &Path, state: &SavedUpload) -> Result<()> {
    let io = |source| Error::Io {
        op: "cannot write upload state",
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(state).map_err(|e| io(e.into()))?;
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)
}

/// Removes a state file; a missing one is fine, other failures are logged.
pub fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove upload state");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ident(path: &str, size: u64, mtime_s: u64) -> FileIdentity {
        FileIdentity {
            canonical_path: PathBuf::from(path),
            size,
            mtime: Some(UNIX_EPOCH + Duration::from_secs(mtime_s)),
        }
    }

    #[test]
    fn key_changes_with_every_input() {
        let server = Url::parse("http://a:8080/").unwrap();
        let base = state_key(&ident("/v/a.mp4", 100, 5), &server);
        assert_eq!(base.len(), 64);
        assert_eq!(base, state_key(&ident("/v/a.mp4", 100, 5), &server));
        assert_ne!(base, state_key(&ident("/v/b.mp4", 100, 5), &server));
        assert_ne!(base, state_key(&ident("/v/a.mp4", 101, 5), &server));
        assert_ne!(base, state_key(&ident("/v/a.mp4", 100, 6), &server));
        let other = Url::parse("http://b:8080/").unwrap();
        assert_ne!(base, state_key(&ident("/v/a.mp4", 100, 5), &other));
        let mut no_mtime = ident("/v/a.mp4", 100, 5);
        no_mtime.mtime = None;
        assert_ne!(base, state_key(&no_mtime, &server));
        // Sub-second mtime changes count too.
        let mut nanos = ident("/v/a.mp4", 100, 5);
        nanos.mtime = Some(UNIX_EPOCH + Duration::new(5, 1));
        assert_ne!(base, state_key(&nanos, &server));
    }

    #[test]
    fn identity_of_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        fs::write(&p, b"hello").unwrap();
        let id = FileIdentity::of(&p).unwrap();
        assert_eq!(id.size, 5);
        assert!(id.canonical_path.is_absolute());
        // A relative spelling of the same file has the same identity.
        let dotted = dir.path().join(".").join("f.bin");
        assert_eq!(FileIdentity::of(&dotted).unwrap(), id);
        let err = FileIdentity::of(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = FileIdentity::of(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().starts_with("cannot open "), "{err}");
    }

    #[test]
    fn round_trip_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let server = Url::parse("http://a:8080/").unwrap();
        let path = state_path(
            &dir.path().join("nested/state"),
            &ident("/x", 1, 1),
            &server,
        );
        assert_eq!(load(&path), None);
        let s = SavedUpload {
            upload_id: "u1".into(),
            video_id: "v1".into(),
            part_size: 8 << 20,
            size: 123,
        };
        save(&path, &s).unwrap();
        assert_eq!(load(&path), Some(s.clone()));
        // Overwrite.
        let s2 = SavedUpload {
            upload_id: "u2".into(),
            ..s
        };
        save(&path, &s2).unwrap();
        assert_eq!(load(&path), Some(s2));
        remove(&path);
        assert_eq!(load(&path), None);
        remove(&path); // idempotent
    }

    #[test]
    fn corrupt_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        fs::write(&p, b"{not json").unwrap();
        assert_eq!(load(&p), None);
    }
}
