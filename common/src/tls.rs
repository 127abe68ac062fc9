//! Cluster identity: credentials, mutual TLS 1.3 and roles. The certificate authority that
//! signs credentials is the master's (`master::ca`); this module only loads and checks them.
//!
//! Every MosaicFS connection is TLS 1.3 with a certificate on both ends, each signed by the
//! cluster's own CA (made by `mosaic-master init`). A certificate names one peer: its
//! common name is the peer's NAME, its organizational unit is its [`Role`], and its only
//! DNS name is `ROLE.mosaic`, so a client that dials a chunkserver checks, through ordinary
//! server-name verification, that the far end really is a chunkserver and not, say, a
//! client certificate replayed by a rogue process. Which remote procedures each role may
//! call is `crate::authz`; a revoked certificate is refused by serial number at accept time.
//!
//! The crypto provider is `ring` (builds from crates.io with only a C compiler). This module
//! never reads or writes a data key: TLS protects the links, the block format protects data.

use crate::{FsError, FsResult};
use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::HashSet;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// File names inside a credential directory (`mosaic-master issue ... --out DIR`).
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
pub const CA_FILE: &str = "ca.pem";
/// The DNS name suffix of every cluster certificate: `master.mosaic`, `chunkserver.mosaic`.
/// Not a real domain: these names only ever meet the cluster's own CA.
const DNS_SUFFIX: &str = "mosaic";
/// Longest accepted peer name: fits a DNS label, a file name and a log line.
const MAX_NAME_LEN: usize = 63;

/// What a peer is. Encoded in its certificate; decides what it may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Master,
    Chunkserver,
    Client,
    Sentinel,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Master,
        Role::Chunkserver,
        Role::Client,
        Role::Sentinel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Chunkserver => "chunkserver",
            Role::Client => "client",
            Role::Sentinel => "sentinel",
        }
    }

    /// The DNS name in this role's certificates and the server name a dialer expects.
    pub fn dns_name(self) -> String {
        format!("{}.{DNS_SUFFIX}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .with_context(|| {
                format!("unknown role {s:?}: expected master, chunkserver, client or sentinel")
            })
    }
}

/// The authenticated peer of a connection, read from its verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    pub name: String,
    /// The certificate's serial number in lowercase hex: what revocation names.
    pub serial: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} (serial {})", self.role, self.name, self.serial)
    }
}

impl Identity {
    /// Reads role, name and serial from a DER certificate. Only called on certificates
    /// the TLS handshake already verified against the cluster CA.
    pub fn from_der(der: &[u8]) -> anyhow::Result<Identity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow::anyhow!("parse peer certificate: {e}"))?;
        let subject = cert.subject();
        let first = |it: &mut dyn Iterator<
            Item = &x509_parser::x509::AttributeTypeAndValue<'_>,
        >| { it.next().and_then(|a| a.as_str().ok()).map(str::to_owned) };
        let name =
            first(&mut subject.iter_common_name()).context("certificate has no common name")?;
        let role = first(&mut subject.iter_organizational_unit())
            .context("certificate has no role (organizational unit)")?;
        Ok(Identity {
            role: role.parse()?,
            name,
            serial: hex(cert.raw_serial()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a peer name given to `issue`: short, and only characters that are safe in file
/// names, DNS labels and log lines.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if !ok {
        anyhow::bail!(
            "invalid name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', \
             not starting with '.'"
        );
    }
    Ok(())
}

/// Where a process's credential lives: its certificate, its private key, the cluster CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl CredentialPaths {
    /// The three files of a credential directory made by `mosaic-master issue`.
    pub fn in_dir(dir: &Path) -> CredentialPaths {
        CredentialPaths {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
            ca: dir.join(CA_FILE),
        }
    }

    /// Loads and checks the credential and builds both TLS ends from it.
    pub fn load(&self) -> anyhow::Result<Tls> {
        let chain = load_certs(&self.cert)?;
        let ca = load_certs(&self.ca)?;
        check_key_permissions(&self.key)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            anyhow::anyhow!(
                "cannot read private key {}: {e} (expected the key.pem written by `mosaic-master issue`)",
                self.key.display()
            )
        })?;
        let leaf = chain
            .first()
            .with_context(|| format!("{} holds no certificate", self.cert.display()))?;
        let identity = Identity::from_der(leaf)
            .with_context(|| format!("read the identity in {}", self.cert.display()))?;
        Tls::new(identity, chain, key, ca).with_context(|| {
            format!(
                "credential {} / {} / {} does not fit together (a key of another certificate, or a \
                 certificate from another cluster?)",
                self.cert.display(),
                self.key.display(),
                self.ca.display()
            )
        })
    }
}

impl CredentialPaths {
    /// A server-only TLS acceptor for the join endpoint: presents this credential's
    /// certificate followed by the CA certificate (the joiner pins the CA by fingerprint),
    /// and asks the peer for no certificate.
    pub fn join_acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let mut chain = load_certs(&self.cert)?;
        chain.extend(load_certs(&self.ca)?);
        check_key_permissions(&self.key)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| anyhow::anyhow!("cannot read private key {}: {e}", self.key.display()))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("select TLS 1.3")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("use the certificate for the join endpoint")?;
        Ok(TlsAcceptor::from(Arc::new(server)))
    }
}

/// The TLS flags every daemon and the mount take, as plain values: each binary's `cli.rs`
/// declares them for clap (so this crate carries no command-line parser) and hands them over
/// as this struct. Flags override the config file's `tls_*_file` fields; `credentials` (DIR)
/// is short for the three files of a directory made by `mosaic-master issue`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// Credential directory holding cert.pem, key.pem and ca.pem.
    pub credentials: Option<PathBuf>,
    /// This process's certificate (PEM); overrides DIR/cert.pem.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM, mode 0600); overrides DIR/key.pem.
    pub key: Option<PathBuf>,
    /// The cluster CA certificate (PEM); overrides DIR/ca.pem.
    pub ca: Option<PathBuf>,
    /// A one-time join token to redeem into `credentials` when it holds no certificate yet.
    pub join_token: Option<String>,
    /// A file holding the join token.
    pub join_token_file: Option<PathBuf>,
    /// The master's join endpoint (its `join_listen` address).
    pub join: Option<String>,
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read certificate file {}: {e} (issue one with `mosaic-master issue`)",
                path.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "certificate file {} holds no PEM certificate (issue one with `mosaic-master issue`)",
            path.display()
        );
    }
    Ok(certs)
}

/// A private key others can read is no longer a credential: refuse it as ssh does.
fn check_key_permissions(path: &Path) -> anyhow::Result<()> {
    check_secret_file(path, "private key")
}

/// Refuses a secret file (`what`: "private key", "data key file") that users other than
/// its owner can read or write, as ssh does: the TLS key and the data key get one rule.
pub fn check_secret_file(path: &Path, what: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{what} {} is accessible by other users (mode {mode:o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Both ends of mutual TLS for one process: it dials with [`Tls::connector`] and accepts
/// with [`Tls::acceptor`], always presenting the same certificate.
#[derive(Clone)]
pub struct Tls {
    identity: Identity,
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.identity)
            .finish()
    }
}

impl Tls {
    fn new(
        identity: Identity,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca: Vec<CertificateDer<'static>>,
    ) -> anyhow::Result<Tls> {
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).context("add the cluster CA certificate")?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .context("build the client certificate verifier")?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("select TLS 1.3")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .context("use the certificate as a server")?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("select TLS 1.3")?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("use the certificate as a client")?;
        Ok(Tls {
            identity,
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Who this process is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Runs the client side of the handshake on `stream`, requiring that the far end
    /// holds a certificate of `expect` role.
    pub async fn connect<S>(
        &self,
        stream: S,
        expect: Role,
        addr: &str,
    ) -> FsResult<tokio_rustls::client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(expect.dns_name())
            .map_err(|e| FsError::internal(format!("server name for {expect}: {e}")))?;
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| FsError::Unavailable(format!("TLS handshake with {addr} ({expect}): {e}")))
    }
}

/// The identity of the peer of an accepted, handshaken connection.
pub fn peer_identity<S>(stream: &tokio_rustls::server::TlsStream<S>) -> anyhow::Result<Identity> {
    let (_, conn) = stream.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .context("peer presented no certificate")?;
    Identity::from_der(leaf)
}

/// Serial numbers of revoked certificates, shared between the accept loop and whatever
/// keeps it current (the master's file watcher, a chunkserver's heartbeat replies). Every
/// change is announced, so open connections of a newly revoked peer are cut
/// ([`Revoked::until_revoked`]), not only new ones refused.
#[derive(Clone, Debug)]
pub struct Revoked(Arc<RevokedInner>);

#[derive(Debug)]
struct RevokedInner {
    serials: parking_lot::RwLock<HashSet<String>>,
    changed: tokio::sync::watch::Sender<()>,
}

impl Default for Revoked {
    fn default() -> Revoked {
        Revoked(Arc::new(RevokedInner {
            serials: Default::default(),
            changed: tokio::sync::watch::Sender::new(()),
        }))
    }
}

impl Revoked {
    pub fn contains(&self, serial: &str) -> bool {
        self.0.serials.read().contains(serial)
    }

    /// Replaces the whole set; returns true when it changed.
    pub fn replace(&self, serials: HashSet<String>) -> bool {
        {
            let mut current = self.0.serials.write();
            if *current == serials {
                return false;
            }
            *current = serials;
        }
        self.0.changed.send_replace(());
        true
    }

    pub fn to_vec(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.serials.read().iter().cloned().collect();
        v.sort();
        v
    }

    /// Resolves once `serial` is in the set (at once if it already is); never otherwise.
    pub async fn until_revoked(&self, serial: &str) {
        // Subscribe before looking, so a change between the look and the wait is not missed.
        let mut changes = self.0.changed.subscribe();
        loop {
            if self.contains(serial) {
                return;
            }
            if changes.changed().await.is_err() {
                // Cannot happen while `self` holds the sender; never resolve if it did.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A new certificate and its private key, PEM-encoded, plus the CA that signed it.
#[derive(Clone, Debug)]
pub struct IssuedCredential {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub serial: String,
}

impl IssuedCredential {
    /// Builds both TLS ends straight from the PEM text (in-process tests; daemons load files).
    pub fn tls(&self) -> anyhow::Result<Tls> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("parse issued certificate: {e}"))?;
        let ca = CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("parse CA certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("parse issued key: {e}"))?;
        let leaf = chain.first().context("no certificate issued")?;
        Tls::new(Identity::from_der(leaf)?, chain, key, ca)
    }

    /// Writes `cert.pem`, `key.pem` (0600) and `ca.pem` into `dir` (created 0700). Refuses
    /// to overwrite an existing key: re-issuing means a new directory or deleting the old.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<CredentialPaths> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create credential directory {}", dir.display()))?;
        let paths = CredentialPaths::in_dir(dir);
        write_new(&paths.key, &self.key_pem, 0o600)?;
        write_new(&paths.cert, &self.cert_pem, 0o644)?;
        write_new(&paths.ca, &self.ca_pem, 0o644)?;
        Ok(paths)
    }
}

/// Creates `path` with `mode`, failing if it exists (O_EXCL), and fsyncs it.
pub fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("create {} (it must not exist yet)", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

/// Seconds since the epoch, for records of issued and revoked credentials.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["cs1", "client-a", "node_7.rack2"] {
            check_name(good).expect(good);
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn revoking_wakes_the_waiters_of_that_serial_only() {
        let revoked = Revoked::default();
        let a = tokio::spawn({
            let revoked = revoked.clone();
            async move { revoked.until_revoked("aa").await }
        });
        let b = tokio::spawn({
            let revoked = revoked.clone();
            async move { revoked.until_revoked("bb").await }
        });
        tokio::task::yield_now().await;
        assert!(revoked.replace(HashSet::from(["aa".to_owned()])));
        tokio::time::timeout(std::time::Duration::from_secs(10), a)
            .await
            .expect("aa's waiter wakes")
            .expect("join");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!b.is_finished(), "bb is not revoked");
        b.abort();
        // Already revoked: resolves at once.
        revoked.until_revoked("aa").await;
    }
}
