//! Which file is which, and how far each one is delivered: the positions file.
//!
//! A file is identified by device + inode, and confirmed by a fingerprint of its first bytes
//! (up to [`FINGERPRINT_BYTES`]): an inode the filesystem reused for a new file does not
//! inherit the old file's position, and a file truncated and rewritten in place
//! (copytruncate) is read again from its start.
//!
//! `<state_dir>/positions.json` holds, per file, the offset below which every line was
//! acknowledged by the broker. It is replaced atomically (temporary file, fsync, rename,
//! fsync of the directory), so after a crash it is the old version or the new one, never a
//! mix. A file that does not parse is reported and the agent does not start: restarting from
//! the beginning (duplicates) or from the end (loss) is the operator's choice, not ours.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// How many leading bytes of a file its fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 256;

/// Device and inode: what a file is while it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A hash of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    pub const EMPTY: Fingerprint = Fingerprint { len: 0, hash: 0 };

    /// The fingerprint of `file`'s first `len` bytes (fewer if it is shorter).
    pub fn read(file: &File, len: usize) -> std::io::Result<Self> {
        let mut buf = [0u8; FINGERPRINT_BYTES];
        let want = len.min(FINGERPRINT_BYTES);
        let mut got = 0;
        while got < want {
            match file.read_at(&mut buf[got..want], got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        Ok(Self::of(&buf[..got]))
    }

    pub fn of(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            return Self::EMPTY;
        }
        Self {
            len: bytes.len() as u32,
            hash: twox_hash::XxHash64::oneshot(0, bytes),
        }
    }

    /// Whether `file` still starts with the bytes this fingerprint was taken of; when it
    /// does and has grown, the fingerprint to keep from now on (covering more bytes).
    pub fn check(&self, file: &File) -> std::io::Result<Option<Fingerprint>> {
        if self.len as usize >= FINGERPRINT_BYTES {
            let now = Self::read(file, self.len as usize)?;
            return Ok((now == *self).then_some(now));
        }
        let longer = Self::read(file, FINGERPRINT_BYTES)?;
        if longer.len < self.len {
            return Ok(None);
        }
        let same = longer.len == self.len || Self::read(file, self.len as usize)? == *self;
        Ok(same.then_some(longer))
    }
}

/// One file's entry in the positions file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Where the file was last seen (informational: identity is `key` + `fingerprint`).
    pub path: PathBuf,
    #[serde(flatten)]
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    /// Every line below this offset was acknowledged by the broker.
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionsFile {
    version: u32,
    host: String,
    written_at: String,
    files: Vec<Position>,
}

const VERSION: u32 = 1;

/// The positions file of a state directory.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("positions.json"),
            dir: state_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved positions; `None` when there is no file yet (the very first start).
    pub fn load(&self) -> Result<Option<Vec<Position>>, AgentError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(format!("could not read it: {e}"))),
        };
        let parsed: PositionsFile = serde_json::from_slice(&text).map_err(|e| {
            self.error(format!(
                "corrupt positions file ({e}); the agent will not guess where to resume: \
                 move it aside to read every file from its start again (duplicates), or fix it"
            ))
        })?;
        if parsed.version != VERSION {
            return Err(self.error(format!(
                "positions file version {} is not {VERSION}: written by another loglake version",
                parsed.version
            )));
        }
        Ok(Some(parsed.files))
    }

    /// Replaces the positions file atomically and durably.
    pub fn save(&self, host: &str, files: Vec<Position>) -> std::io::Result<()> {
        let body = PositionsFile {
            version: VERSION,
            host: host.to_string(),
            written_at: chrono::Utc::now().to_rfc3339(),
            files,
        };
        let tmp = self.dir.join("positions.json.tmp");
        {
            let mut f = File::create(&tmp)?;
            serde_json::to_writer(&mut f, &body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()
    }

    fn error(&self, message: String) -> AgentError {
        AgentError::State {
            path: self.path.clone(),
            message,
        }
    }
}

/// Holds `<state_dir>/lock` for the life of the agent: a second agent on the same state
/// directory would overwrite this one's positions.
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code)] File);

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<Self, AgentError> {
        let error = |message: String| AgentError::State {
            path: state_dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(state_dir)
            .map_err(|e| error(format!("could not create the state directory: {e}")))?;
        let file = File::create(state_dir.join("lock"))
            .map_err(|e| error(format!("could not create its lock file: {e}")))?;
        match file.try_lock() {
            Ok(()) => Ok(Self(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(error(
                "another loglake agent is running on this state directory".into(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(error(format!("could not lock it: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_a_save_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load().unwrap(), None, "no file: the first start");
        let files = vec![Position {
            path: "/var/log/a.log".into(),
            key: FileKey { dev: 1, ino: 2 },
            fingerprint: Fingerprint::of(b"hello"),
            offset: 42,
        }];
        store.save("h", files.clone()).unwrap();
        assert_eq!(store.load().unwrap(), Some(files));
        for garbage in [&b""[..], b"{\"version\":1", b"\x00\x00\x00", b"{}"] {
            std::fs::write(store.path(), garbage).unwrap();
            let err = store.load().expect_err("garbage").to_string();
            assert!(
                err.contains("positions.json") && err.contains("corrupt"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_fingerprint_follows_growth_and_notices_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first line\n").unwrap();
        let f = File::open(&path).unwrap();
        let fp = Fingerprint::read(&f, FINGERPRINT_BYTES).unwrap();
        assert_eq!(fp.len, 11);
        let more = "x".repeat(400);
        std::fs::write(&path, format!("first line\n{more}")).unwrap();
        let grown = fp.check(&f).unwrap().expect("same start");
        assert_eq!(grown.len as usize, FINGERPRINT_BYTES);
        assert_eq!(grown.check(&f).unwrap(), Some(grown));
        std::fs::write(&path, format!("other line\n{more}")).unwrap();
        assert_eq!(grown.check(&f).unwrap(), None);
        assert_eq!(fp.check(&f).unwrap(), None);
        std::fs::write(&path, b"first").unwrap();
        assert_eq!(fp.check(&f).unwrap(), None, "shorter than the fingerprint");
    }

    #[test]
    fn a_second_agent_cannot_take_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _held = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path())
            .expect_err("held")
            .to_string();
        assert!(err.contains("another loglake agent"), "{err}");
    }
}
