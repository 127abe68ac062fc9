//! One-time join tokens on the master's side: `issue-token` records them, the join endpoint
//! redeems them (see `common::join` for the exchange and the token format).
//!
//! ```text
//! STATE/pki/tokens       one line per issued token: ID SECRET_HASH ROLE NAME EXPIRES_UNIX
//! STATE/pki/tokens.used  one line per redeemed token: ID UNIX_TIME
//! ```
//!
//! Both files are append-only, so the admin command (which may run while the master runs)
//! and the master never rewrite each other's lines. A token is marked used (appended and
//! fsynced) before its certificate is signed: a crash in between wastes the token, never
//! lets it be used twice. This module never stores a token's secret, only its BLAKE3 hash.

use anyhow::Context as _;
use common::audit::{Audit, Event};
use common::join::{Refusal, Token, TokenRecord};
use common::tls::Role;
use common::types::JoinedCredential;
use common::{FsError, FsResult};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TOKENS: &str = "tokens";
const USED: &str = "tokens.used";
/// Longest lifetime `issue-token` accepts: a join token is for joining now, not a
/// long-lived credential (that is what `issue` makes).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Records a new token for `name` in `role`, valid for `ttl` from `now_unix`. Returns the
/// token (its text holds the secret: print it once, to the admin).
pub fn issue_token(
    state_dir: &Path,
    role: Role,
    name: &str,
    ttl: Duration,
    now_unix: u64,
) -> anyhow::Result<(Token, TokenRecord)> {
    common::tls::check_name(name)?;
    if role == Role::Master {
        anyhow::bail!("a master does not join: issue tokens for chunkserver, client or sentinel");
    }
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        anyhow::bail!(
            "token lifetime must be between 1 s and {} days (for a long-lived credential use \
             `mosaic-master issue`)",
            MAX_TOKEN_TTL.as_secs() / 86_400
        );
    }
    let ca_pem = crate::pki::ca_pem(state_dir)?;
    let token = Token::generate(common::join::ca_fingerprint_pem(&ca_pem)?);
    let record = TokenRecord {
        id: token.id.clone(),
        secret_hash: token.secret_hash(),
        role,
        name: name.to_owned(),
        expires_unix: now_unix.saturating_add(ttl.as_secs()),
    };
    crate::pki::append(
        &tokens_path(state_dir, TOKENS),
        &format!(
            "{} {} {} {} {}\n",
            record.id, record.secret_hash, record.role, record.name, record.expires_unix
        ),
    )?;
    Ok((token, record))
}

fn tokens_path(state_dir: &Path, file: &str) -> PathBuf {
    crate::pki::pki_dir(state_dir).join(file)
}

fn read_lines(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Every issued token by id.
pub fn read_tokens(state_dir: &Path) -> anyhow::Result<HashMap<String, TokenRecord>> {
    let path = tokens_path(state_dir, TOKENS);
    let mut tokens = HashMap::new();
    for (n, line) in read_lines(&path)?.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields[..] {
            [] => continue,
            [id, hash, role, name, expires] => role.parse::<Role>().ok().and_then(|role| {
                Some(TokenRecord {
                    id: id.to_owned(),
                    secret_hash: hash.to_owned(),
                    role,
                    name: name.to_owned(),
                    expires_unix: expires.parse().ok()?,
                })
            }),
            _ => None,
        };
        let record = parsed.with_context(|| {
            format!(
                "{} line {} is malformed (expected ID HASH ROLE NAME EXPIRES): fix or remove it",
                path.display(),
                n + 1
            )
        })?;
        tokens.insert(record.id.clone(), record);
    }
    Ok(tokens)
}

/// Ids of every redeemed token.
pub fn read_used(state_dir: &Path) -> anyhow::Result<HashSet<String>> {
    Ok(read_lines(&tokens_path(state_dir, USED))?
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// The join endpoint's logic: checks and redeems tokens one at a time.
#[derive(Clone)]
pub struct Redeemer {
    state_dir: PathBuf,
    audit: Audit,
    /// Redemptions are serialized: two concurrent uses of one token must not both pass the
    /// "not used yet" check.
    lock: Arc<Mutex<()>>,
}

impl Redeemer {
    pub fn new(state_dir: PathBuf, audit: Audit) -> Redeemer {
        Redeemer {
            state_dir,
            audit,
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// Redeems `text` for a certificate over the key of `csr_pem`; `addr` is the joiner's
    /// address (for the audit log). Blocking: file I/O and signing.
    pub fn redeem(
        &self,
        text: &str,
        csr_pem: &str,
        addr: &str,
        now_unix: u64,
    ) -> FsResult<JoinedCredential> {
        let refuse = |id: Option<String>, reason: Refusal| {
            tracing::warn!(addr, token = ?id, %reason, "join token refused");
            self.audit.record(Event::TokenRefused {
                token: id,
                addr: addr.to_owned(),
                reason: reason.as_str().to_owned(),
            });
            FsError::Invalid(format!("join token refused: {reason}"))
        };
        if text.len() > common::join::MAX_JOIN_INPUT || csr_pem.len() > common::join::MAX_JOIN_INPUT
        {
            return Err(refuse(None, Refusal::Malformed));
        }
        let token = Token::parse(text).map_err(|r| refuse(None, r))?;
        let internal = |what: &str, e: anyhow::Error| {
            let msg = format!("{what}: {e:#}");
            tracing::error!(error = %msg, "join failed");
            FsError::internal(msg)
        };
        let _serial = self.lock.lock();
        let tokens = read_tokens(&self.state_dir).map_err(|e| internal("read tokens", e))?;
        let used = read_used(&self.state_dir).map_err(|e| internal("read used tokens", e))?;
        let ca_pem = crate::pki::ca_pem(&self.state_dir).map_err(|e| internal("read CA", e))?;
        let ca_fp = common::join::ca_fingerprint_pem(&ca_pem).map_err(|e| internal("CA", e))?;
        let record = tokens.get(&token.id);
        common::join::check(&token, record, used.contains(&token.id), &ca_fp, now_unix)
            .map_err(|r| refuse(Some(token.id.clone()), r))?;
        let record = record.ok_or_else(|| FsError::internal("checked token vanished"))?;
        // Spend the token first (durably): a crash after this wastes it, never reuses it.
        crate::pki::append(
            &tokens_path(&self.state_dir, USED),
            &format!("{} {now_unix}\n", token.id),
        )
        .map_err(|e| internal("mark the token used", e))?;
        let (cert_pem, serial) = crate::pki::sign_request(
            &self.state_dir,
            record.role,
            &record.name,
            csr_pem,
        )
        .map_err(|e| {
            tracing::warn!(addr, error = %format!("{e:#}"), "join refused: bad signing request");
            FsError::Invalid(format!("join refused: {e:#}"))
        })?;
        tracing::info!(addr, token = token.id, role = %record.role, name = record.name, serial,
            "join token redeemed");
        self.audit.record(Event::TokenUsed {
            token: token.id.clone(),
            role: record.role.to_string(),
            name: record.name.clone(),
            serial: serial.clone(),
            addr: addr.to_owned(),
        });
        self.audit.record(Event::CredentialIssued {
            role: record.role.to_string(),
            name: record.name.clone(),
            serial: serial.clone(),
            via: "join-token".into(),
        });
        Ok(JoinedCredential {
            cert_pem,
            ca_pem,
            serial,
        })
    }
}

/// The join service of one connection.
#[derive(Clone)]
pub struct JoinService {
    pub redeemer: Redeemer,
    pub addr: String,
}

impl common::rpc::Join for JoinService {
    async fn join(
        self,
        _: tarpc::context::Context,
        token: String,
        csr_pem: String,
    ) -> FsResult<JoinedCredential> {
        let now = common::tls::unix_now();
        tokio::task::spawn_blocking(move || self.redeemer.redeem(&token, &csr_pem, &self.addr, now))
            .await
            .unwrap_or_else(|e| Err(FsError::internal(format!("join task failed: {e}"))))
    }
}

/// Serves the join endpoint on `listener` until `shutdown` resolves: server-authenticated
/// TLS (`acceptor`, from `CredentialPaths::join_acceptor`), then only the `Join` service,
/// through the common accept loop ([`common::rpc::accept_loop`]). Handshake failures are
/// logged, not audited: a joiner has no identity yet, and redemptions are audited by the
/// [`Redeemer`].
pub async fn serve_join(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    redeemer: Redeemer,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use common::rpc::Join as _;
    use futures::StreamExt as _;
    use tarpc::server::Channel as _;
    let on_handshake = move |stream: common::rpc::ServerStream, peer: std::net::SocketAddr| {
        let service = JoinService {
            redeemer: redeemer.clone(),
            addr: peer.to_string(),
        };
        async move {
            tarpc::server::BaseChannel::with_defaults(common::rpc::transport(stream))
                .execute(service.serve())
                .for_each(|request| async move {
                    tokio::spawn(request);
                })
                .await;
        }
    };
    common::rpc::accept_loop(
        listener,
        acceptor,
        Audit::disabled(),
        on_handshake,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_expire_and_resist_forgery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path();
        crate::pki::init_pki(state, "test").expect("init");
        let audit_path = state.join("audit.log");
        let audit = Audit::open(
            common::audit::AuditConfig {
                path: audit_path.clone(),
                max_bytes: 1 << 20,
                keep: 1,
            },
            "master",
        )
        .expect("audit");
        let now = 1_000_000;
        let (token, _) = issue_token(
            state,
            Role::Chunkserver,
            "cs7",
            Duration::from_secs(600),
            now,
        )
        .expect("issue");
        let (short, _) =
            issue_token(state, Role::Client, "c", Duration::from_secs(1), now).expect("issue");
        let stored = std::fs::read_to_string(state.join("pki/tokens")).expect("read");
        assert!(
            !stored.contains(&token.secret_text()[15..80]),
            "no secret on disk"
        );
        let redeemer = Redeemer::new(state.to_owned(), audit);
        let key = rcgen::KeyPair::generate().expect("key");
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let joined = redeemer
            .redeem(&token.secret_text(), &csr, "peer:1", now + 1)
            .expect("first use");
        let der = rustls::pki_types::CertificateDer::from(x509_der(&joined.cert_pem));
        let id = common::tls::Identity::from_der(&der).expect("identity");
        assert_eq!((id.role, id.name.as_str()), (Role::Chunkserver, "cs7"));
        let again = redeemer.redeem(&token.secret_text(), &csr, "peer:2", now + 2);
        assert!(
            matches!(&again, Err(FsError::Invalid(m)) if m.contains("used")),
            "{again:?}"
        );
        let late = redeemer.redeem(&short.secret_text(), &csr, "peer:3", now + 5);
        assert!(
            matches!(&late, Err(FsError::Invalid(m)) if m.contains("expired")),
            "{late:?}"
        );
        let mut text = token.secret_text();
        // Flip one hex digit of the secret.
        let i = common::join::TOKEN_PREFIX.len() + 1 + 16 + 1;
        let flipped = if &text[i..=i] == "0" { "1" } else { "0" };
        text.replace_range(i..=i, flipped);
        let forged = redeemer.redeem(&text, &csr, "peer:4", now + 2);
        assert!(
            matches!(&forged, Err(FsError::Invalid(m)) if m.contains("forged")),
            "{forged:?}"
        );
        assert!(redeemer.redeem("garbage", &csr, "peer:5", now).is_err());

        let events: Vec<Event> = common::audit::read_all(&audit_path, 1)
            .expect("read audit")
            .into_iter()
            .map(|r| r.event)
            .collect();
        let reasons: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::TokenRefused { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, ["used", "expired", "forged", "malformed"]);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::TokenUsed { name, serial, .. }
            if name == "cs7" && *serial == joined.serial))
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::CredentialIssued { via, .. }
            if via == "join-token"))
        );
    }

    fn x509_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("pem")
            .to_vec()
    }
}
