//! The audit log: one JSON object per line (serde_json) for every security-relevant event
//! and every namespace mutation, appended to a file and rotated by size.
//!
//! Who writes it: the master, for connections it accepts or refuses, calls refused by role,
//! connections cut by a revocation, join tokens used or refused and every namespace
//! mutation; the admin commands (`issue`, `revoke`, `rotate-key`, `issue-token`) append to the
//! same file. The format is documented in docs/SECURITY.md and is a contract: add fields,
//! never rename them.
//!
//! Durability: each record is one `write(2)` of a whole line to an `O_APPEND` file, so a
//! crash of the process never loses a written record or leaves half of one; security events
//! (everything but namespace mutations) are also `fdatasync`ed, so they survive power loss.
//! Namespace mutations are not synced one by one: that would add a disk flush to every
//! `mkdir`, and the metadata database already holds their effect durably.
//!
//! This module must never make a daemon fail or stop serving because the log cannot be
//! written: an audit write error is logged (as an error, once per record) and serving goes
//! on. It never records file data, keys, tokens' secrets or private keys.

use crate::tls::Identity;
use anyhow::Context as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default size at which the live file is rotated: 64 MiB holds about half a million
/// records, days of a busy cluster, and is still quick to grep.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of rotated files kept (`audit.log.1` .. `audit.log.8`) beside the live one.
pub const DEFAULT_AUDIT_KEEP: u32 = 8;
/// Default audit log file name inside the master's state directory.
pub const AUDIT_FILE: &str = "audit.log";
/// Longest name or reason copied into a record: a hostile peer must not be able to make
/// one record megabytes long.
const FIELD_MAX: usize = 1024;

/// A peer as the audit log names it: from its verified certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub role: String,
    pub name: String,
    pub serial: String,
}

impl From<&Identity> for Peer {
    fn from(id: &Identity) -> Peer {
        Peer {
            role: id.role.as_str().to_owned(),
            name: id.name.clone(),
            serial: id.serial.clone(),
        }
    }
}

/// A namespace mutation: who asked, what, on which inode or name, and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    /// `create`, `setattr`, `unlink`, `rmdir`, `rename`, `link`, `setxattr`, `removexattr`,
    /// `write` (a committed data write: size and mtime change).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    /// The uid/gid the client asserted, where the request carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    /// The name inside `parent` (lossy UTF-8: names are bytes on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_parent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_name: Option<String>,
    /// The absolute path of the target (`parent`'s path and `name`, or `ino`'s path), lossy
    /// UTF-8; absent when it has no name left (unlinked while open) or could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For `rename` and `link`: the absolute path of the new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    /// `ok`, or the error the caller got.
    pub result: String,
}

/// One auditable event. Serialized with an `event` field naming the variant in snake case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A peer completed the mutual TLS handshake with a valid, unrevoked certificate.
    ConnectionAccepted { addr: String, peer: Peer },
    /// A connection was refused: no or a foreign certificate (handshake failed), a revoked
    /// one, or an unreadable one. `peer` is known only when the certificate verified.
    ConnectionRefused {
        addr: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<Peer>,
        reason: String,
    },
    /// An open connection was cut, e.g. because its certificate was revoked.
    ConnectionClosed {
        addr: String,
        peer: Peer,
        reason: String,
    },
    /// A call refused by the authorization allowlist (`authz::allowed`).
    PermissionDenied { peer: Peer, method: String },
    /// A credential was signed: `via` is `admin` (`issue`) or `join-token`.
    CredentialIssued {
        role: String,
        name: String,
        serial: String,
        via: String,
    },
    CredentialRevoked {
        role: String,
        name: String,
        serial: String,
    },
    /// A data key was added to a key file (`rotate-key`).
    KeyRotated { key_file: String, key_id: u32 },
    /// A one-time join token was made; `token` is its public id, never the secret.
    TokenIssued {
        token: String,
        role: String,
        name: String,
        expires_unix: u64,
    },
    /// A join token was exchanged for the credential with `serial`.
    TokenUsed {
        token: String,
        role: String,
        name: String,
        serial: String,
        addr: String,
    },
    /// A join token was refused: `unknown`, `forged`, `expired`, `used` or `malformed`.
    TokenRefused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        addr: String,
        reason: String,
    },
    /// An admin asked the master to forget a node (`mosaic-sentinel forget`); `result` is
    /// `ok` or the refusal. `replicas`: the replica rows dropped.
    NodeForgotten {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<Peer>,
        replicas: u64,
        result: String,
    },
    /// A namespace mutation (flattened: `op`, `peer`, `uid`, ..., `result`).
    Mutation(Mutation),
}

impl Event {
    /// Security events are synced to disk one by one; namespace mutations are not (see the
    /// module header).
    fn durable(&self) -> bool {
        !matches!(self, Event::Mutation(_))
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// UTC time, RFC 3339 with milliseconds: `2026-11-21T11:20:51.123Z`.
    pub time: String,
    /// The same instant in milliseconds since the Unix epoch (for sorting and arithmetic).
    pub unix_ms: u64,
    /// Which process wrote the record: `master`, `admin`.
    pub source: String,
    #[serde(flatten)]
    pub event: Event,
}

fn now() -> (String, u64) {
    let now = time::OffsetDateTime::now_utc();
    let unix_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    );
    (text, unix_ms)
}

/// Shortens a peer-supplied text to [`FIELD_MAX`] bytes (at a character boundary).
pub fn clip(text: &str) -> String {
    if text.len() <= FIELD_MAX {
        return text.to_owned();
    }
    let mut end = FIELD_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Where and how big: the rotation policy of one audit file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// The live file is rotated before a record would make it larger than this.
    pub max_bytes: u64,
    /// Rotated files kept: `PATH.1` (newest) .. `PATH.keep` (oldest, dropped next time).
    pub keep: u32,
}

/// The path of the `n`th rotated file (`audit.log.3`).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// An open audit file: appends whole lines, rotates by size.
#[derive(Debug)]
pub struct AuditFile {
    config: AuditConfig,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        // Peer names, paths and uids are not for every local user.
        .mode(0o600)
        .open(path)
}

impl AuditFile {
    /// Opens (creating, mode 0600) the live file for appending.
    pub fn open(config: AuditConfig) -> anyhow::Result<AuditFile> {
        if config.keep == 0 || config.max_bytes == 0 {
            anyhow::bail!(
                "audit log {}: audit_max_bytes and audit_keep must be at least 1",
                config.path.display()
            );
        }
        let file = open_append(&config.path).with_context(|| {
            format!(
                "open audit log {} (does its directory exist and is it writable?)",
                config.path.display()
            )
        })?;
        let size = file
            .metadata()
            .with_context(|| format!("stat audit log {}", config.path.display()))?
            .len();
        Ok(AuditFile { config, file, size })
    }

    /// Appends one record as one line, rotating first when it would not fit.
    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.config.max_bytes {
            self.rotate()?;
        }
        // One write of the whole line: O_APPEND makes it land after whatever another
        // process (an admin command) appended, and never interleaved with it.
        self.file.write_all(&line)?;
        self.size = self.size.saturating_add(len);
        if record.event.durable() {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Shifts `PATH.k` to `PATH.k+1` (dropping the oldest), `PATH` to `PATH.1`, and starts an
    /// empty `PATH`. A crash in between leaves every record in some file: renames only.
    fn rotate(&mut self) -> std::io::Result<()> {
        let path = &self.config.path;
        for n in (1..self.config.keep).rev() {
            match std::fs::rename(rotated_path(path, n), rotated_path(path, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(path, rotated_path(path, 1))?;
        self.file = open_append(path)?;
        self.size = 0;
        Ok(())
    }
}

/// A cheap, cloneable handle every task that audits holds. [`Audit::disabled`] records
/// nothing (tests and processes without an audit file).
#[derive(Clone, Debug, Default)]
pub struct Audit {
    file: Option<Arc<Mutex<AuditFile>>>,
    source: &'static str,
}

impl Audit {
    pub fn disabled() -> Audit {
        Audit::default()
    }

    /// Opens `config.path`; `source` names the writer in every record.
    pub fn open(config: AuditConfig, source: &'static str) -> anyhow::Result<Audit> {
        Ok(Audit {
            file: Some(Arc::new(Mutex::new(AuditFile::open(config)?))),
            source,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends `event`. Short, blocking file I/O under a mutex: records are a few hundred
    /// bytes and only security events are synced; a failure is logged, never returned.
    pub fn record(&self, event: Event) {
        let Some(file) = &self.file else { return };
        let (time, unix_ms) = now();
        let record = Record {
            time,
            unix_ms,
            source: self.source.to_owned(),
            event,
        };
        if let Err(e) = file.lock().append(&record) {
            tracing::error!(error = %e, ?record, "audit record not written");
        }
    }
}

/// Reads every record of the live file and its rotated files, oldest first. For tests and
/// tools; a line that does not parse is an error naming the file and line.
pub fn read_all(path: &Path, keep: u32) -> anyhow::Result<Vec<Record>> {
    let mut files: Vec<PathBuf> = (1..=keep).rev().map(|n| rotated_path(path, n)).collect();
    files.push(path.to_owned());
    let mut records = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
        };
        for (n, line) in text.lines().enumerate() {
            records.push(serde_json::from_str(line).with_context(|| {
                format!("{} line {} is not an audit record", file.display(), n + 1)
            })?);
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(n: usize) -> Event {
        Event::ConnectionRefused {
            addr: format!("127.0.0.1:{n}"),
            peer: None,
            reason: "TLS handshake failed".into(),
        }
    }

    #[test]
    fn records_round_trip_as_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(AUDIT_FILE);
        let audit = Audit::open(
            AuditConfig {
                path: path.clone(),
                max_bytes: DEFAULT_AUDIT_MAX_BYTES,
                keep: 2,
            },
            "master",
        )
        .expect("open");
        let mutation = Event::Mutation(Mutation {
            op: "rename".into(),
            uid: Some(1000),
            parent: Some(1),
            name: Some("a".into()),
            new_parent: Some(1),
            new_name: Some("b".into()),
            path: Some("/a".into()),
            new_path: Some("/b".into()),
            result: "ok".into(),
            ..Mutation::default()
        });
        audit.record(refused(1));
        audit.record(mutation.clone());
        let records = read_all(&path, 2).expect("read");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].event, refused(1));
        assert_eq!(records[1].event, mutation);
        assert_eq!(records[1].source, "master");
        let text = std::fs::read_to_string(&path).expect("read");
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("line")).expect("json");
        assert_eq!(first["event"], "connection_refused");
        assert!(first["time"].as_str().expect("time").ends_with('Z'));
        let second: serde_json::Value =
            serde_json::from_str(text.lines().nth(1).expect("line")).expect("json");
        assert_eq!(second["event"], "mutation");
        assert_eq!(second["op"], "rename", "mutation fields are flattened");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn rotation_keeps_k_files_and_loses_no_recent_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(AUDIT_FILE);
        let keep = 3;
        // About four records per file.
        let (time, unix_ms) = now();
        let line = serde_json::to_vec(&Record {
            time,
            unix_ms,
            source: "master".into(),
            event: refused(10_000),
        })
        .expect("json")
        .len() as u64;
        let max_bytes = 4 * (line + 1) + 2;
        let audit = Audit::open(
            AuditConfig {
                path: path.clone(),
                max_bytes,
                keep,
            },
            "master",
        )
        .expect("open");
        let total = 40;
        for n in 0..total {
            audit.record(refused(10_000 + n));
        }
        for n in 1..=keep {
            let size = std::fs::metadata(rotated_path(&path, n))
                .expect("rotated file")
                .len();
            assert!(size <= max_bytes, "{n}: {size} > {max_bytes}");
        }
        assert!(!rotated_path(&path, keep + 1).exists(), "only {keep} kept");
        let records = read_all(&path, keep).expect("read");
        // The newest records survive, in order, with no gap: (keep + 1) files of 4.
        assert_eq!(records.len(), 4 * (keep as usize + 1));
        let first = total - records.len();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.event, refused(10_000 + first + i));
        }
    }

    #[test]
    fn a_reopened_log_appends_and_counts_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(AUDIT_FILE);
        let config = AuditConfig {
            path: path.clone(),
            max_bytes: 1_000_000,
            keep: 1,
        };
        Audit::open(config.clone(), "admin")
            .expect("open")
            .record(refused(1));
        Audit::open(config, "master")
            .expect("reopen")
            .record(refused(2));
        let records = read_all(&path, 1).expect("read");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].source, "admin");
        assert_eq!(records[1].event, refused(2));
    }

    #[test]
    fn zero_limits_are_refused_and_long_fields_clipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = AuditFile::open(AuditConfig {
            path: dir.path().join("a"),
            max_bytes: 1,
            keep: 0,
        })
        .expect_err("keep 0");
        assert!(err.to_string().contains("audit_keep"), "{err}");
        let long = "é".repeat(FIELD_MAX);
        let clipped = clip(&long);
        assert!(clipped.len() <= FIELD_MAX + 3);
        assert_eq!(clip("short"), "short");
    }
}
