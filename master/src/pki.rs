//! The cluster's certificate authority on disk, in `STATE/pki/`: `init` makes it, `issue`
//! signs credentials, `revoke` shuts one out. Plain files so that these admin commands work
//! with the master stopped and need no network:
//!
//! ```text
//! STATE/pki/ca.pem         the CA certificate (give it to every node: `issue` copies it)
//! STATE/pki/ca.key         the CA private key, 0600: whoever holds it can join nodes
//! STATE/pki/master/        the master's own credential (cert.pem, key.pem, ca.pem)
//! STATE/pki/issued         one line per credential: SERIAL ROLE NAME UNIX_TIME
//! STATE/pki/revoked        one line per revoked credential, same fields
//! ```
//!
//! The running master re-reads `revoked` every [`REVOCATION_POLL`] and hands the list to
//! chunkservers in heartbeat replies. This module never touches the data key.

use crate::ca::Ca;
use anyhow::Context as _;
use common::tls::{CredentialPaths, IssuedCredential, Role};
use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PKI_DIR: &str = "pki";
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const MASTER_DIR: &str = "master";
const ISSUED: &str = "issued";
const REVOKED: &str = "revoked";
/// How often the running master re-reads the revocation list: a revoked peer is refused
/// within about this long after `mosaic-master revoke` returns.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);

pub fn pki_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(PKI_DIR)
}

/// The master's own credential directory inside the state directory.
pub fn master_credentials(state_dir: &Path) -> CredentialPaths {
    CredentialPaths::in_dir(&pki_dir(state_dir).join(MASTER_DIR))
}

/// Creates the CA and the master's credential. Refuses if a CA exists already.
pub fn init_pki(state_dir: &Path, cluster: &str) -> anyhow::Result<()> {
    let dir = pki_dir(state_dir);
    if dir.join(CA_KEY).exists() {
        anyhow::bail!(
            "{} already exists: this cluster already has a certificate authority",
            dir.join(CA_KEY).display()
        );
    }
    create_dir(&dir)?;
    let ca = Ca::generate(cluster)?;
    ca.write_to(&dir.join(CA_CERT), &dir.join(CA_KEY))?;
    let issued = ca.issue(Role::Master, "master")?;
    issued.write_to(&dir.join(MASTER_DIR))?;
    record(&dir.join(ISSUED), &issued.serial, Role::Master, "master")?;
    Ok(())
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

fn load_ca(state_dir: &Path) -> anyhow::Result<Ca> {
    let dir = pki_dir(state_dir);
    if !dir.join(CA_KEY).exists() {
        anyhow::bail!(
            "{} does not exist: run `mosaic-master init --state {}` first (or `init-pki` for a \
             cluster made before TLS)",
            dir.join(CA_KEY).display(),
            state_dir.display()
        );
    }
    Ca::load(&dir.join(CA_CERT), &dir.join(CA_KEY))
}

/// Signs a credential for `name` in `role` and writes it to `out` (cert.pem, key.pem 0600,
/// ca.pem). Names need not be unique: revocation is by serial, and `revoke NAME` revokes
/// every credential issued to that name.
pub fn issue(
    state_dir: &Path,
    role: Role,
    name: &str,
    out: &Path,
) -> anyhow::Result<IssuedCredential> {
    let ca = load_ca(state_dir)?;
    let issued = ca.issue(role, name)?;
    issued.write_to(out)?;
    record(&pki_dir(state_dir).join(ISSUED), &issued.serial, role, name)?;
    Ok(issued)
}

/// The cluster CA certificate (PEM), as nodes receive it in `ca.pem`.
pub fn ca_pem(state_dir: &Path) -> anyhow::Result<String> {
    let path = pki_dir(state_dir).join(CA_CERT);
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "read the cluster CA {} (run `mosaic-master init` first)",
            path.display()
        )
    })
}

/// Signs a certificate for `name` in `role` over the key of a PEM signing request (a join)
/// and records it in `issued`. Returns the certificate (PEM) and its serial.
pub fn sign_request(
    state_dir: &Path,
    role: Role,
    name: &str,
    csr_pem: &str,
) -> anyhow::Result<(String, String)> {
    let ca = load_ca(state_dir)?;
    let (cert_pem, serial) = ca.sign_request(role, name, csr_pem)?;
    record(&pki_dir(state_dir).join(ISSUED), &serial, role, name)?;
    Ok((cert_pem, serial))
}

/// One line of `issued` or `revoked`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub serial: String,
    pub role: String,
    pub name: String,
}

fn record(path: &Path, serial: &str, role: Role, name: &str) -> anyhow::Result<()> {
    append(
        path,
        &format!("{serial} {role} {name} {}\n", common::tls::unix_now()),
    )
}

/// Appends one line to `path` (created 0600) and fsyncs it.
pub(crate) fn append(path: &Path, line: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("append to {}", path.display()))
}

fn read_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(serial), Some(role), Some(name)) => records.push(Record {
                serial: serial.to_owned(),
                role: role.to_owned(),
                name: name.to_owned(),
            }),
            (None, _, _) => {}
            _ => anyhow::bail!(
                "{} line {} is malformed (expected SERIAL ROLE NAME TIME): fix or remove it",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(records)
}

/// Revokes every credential issued to `name` (or only the one with `serial`), returning
/// what it revoked. Errors when nothing matches, so a typo is not a silent no-op.
pub fn revoke(state_dir: &Path, name: &str, serial: Option<&str>) -> anyhow::Result<Vec<Record>> {
    let dir = pki_dir(state_dir);
    let issued = read_records(&dir.join(ISSUED))?;
    let already: HashSet<String> = read_records(&dir.join(REVOKED))?
        .into_iter()
        .map(|r| r.serial)
        .collect();
    let matches: Vec<Record> = issued
        .into_iter()
        .filter(|r| r.name == name && serial.is_none_or(|s| s.eq_ignore_ascii_case(&r.serial)))
        .collect();
    if matches.is_empty() {
        anyhow::bail!(
            "no credential named {name:?}{} was issued by this cluster (see {})",
            serial
                .map(|s| format!(" with serial {s}"))
                .unwrap_or_default(),
            dir.join(ISSUED).display()
        );
    }
    if matches.iter().any(|r| r.role == Role::Master.as_str()) {
        anyhow::bail!("refusing to revoke the master's own credential");
    }
    let mut revoked = Vec::new();
    for r in matches {
        if already.contains(&r.serial) {
            continue;
        }
        append(
            &dir.join(REVOKED),
            &format!(
                "{} {} {} {}\n",
                r.serial,
                r.role,
                r.name,
                common::tls::unix_now()
            ),
        )?;
        revoked.push(r);
    }
    Ok(revoked)
}

/// The serials of every revoked credential.
pub fn revoked_serials(state_dir: &Path) -> anyhow::Result<HashSet<String>> {
    Ok(read_records(&pki_dir(state_dir).join(REVOKED))?
        .into_iter()
        .map(|r| r.serial)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path();
        init_pki(state, "test").expect("init");
        assert!(init_pki(state, "test").is_err(), "a second CA is refused");
        let a = issue(state, Role::Chunkserver, "cs1", &state.join("cs1")).expect("issue");
        let b = issue(state, Role::Chunkserver, "cs1", &state.join("cs1b")).expect("issue");
        let c = issue(state, Role::Client, "c", &state.join("c")).expect("issue");
        assert!(revoked_serials(state).expect("read").is_empty());

        let only_b = revoke(state, "cs1", Some(&b.serial)).expect("revoke one");
        assert_eq!(only_b.len(), 1);
        let all = revoke(state, "cs1", None).expect("revoke the rest");
        assert_eq!(all.len(), 1, "b is not revoked twice");
        let serials = revoked_serials(state).expect("read");
        assert_eq!(serials, HashSet::from([a.serial, b.serial]));
        assert!(!serials.contains(&c.serial));

        assert!(revoke(state, "nobody", None).is_err());
        assert!(revoke(state, "master", None).is_err());
        // The written credential loads and carries its identity.
        let tls = CredentialPaths::in_dir(&state.join("c"))
            .load()
            .expect("load");
        assert_eq!(tls.identity().name, "c");
        master_credentials(state).load().expect("master credential");
    }
}
