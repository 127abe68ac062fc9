//! One-time join tokens: how a new node gets its credential without the admin copying key
//! files around.
//!
//! `mosaic-master issue-token ROLE NAME --ttl 10m` prints a token
//! `mosaic-join-v1.ID.SECRET.CAFP`: a public id, a 256-bit secret, and the BLAKE3
//! fingerprint of the cluster CA certificate. The master keeps only the id, a BLAKE3 hash of
//! the secret, the role, the name and the expiry (`STATE/pki/tokens`). The node generates its
//! own key pair, dials the master's join endpoint over TLS (server-authenticated only: it has
//! no certificate yet) and accepts the master only if the master presents a certificate
//! chain through the CA whose fingerprint the token names, so a rogue endpoint never sees the
//! secret. It then sends the token and a certificate signing request; the master checks the
//! token ([`check`]), marks it used, and signs a certificate for the token's role and name
//! over the request's public key. The private key never leaves the node.
//!
//! This module never stores a token's secret and never writes a private key anywhere but the
//! credential directory it is given.

use crate::tls::{CERT_FILE, IssuedCredential, Role, TlsArgs};
use crate::{FsError, FsResult};
use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The version tag every token starts with: a later format gets a new tag.
pub const TOKEN_PREFIX: &str = "mosaic-join-v1";
/// Bytes of the public token id: enough that two live tokens never collide.
const ID_BYTES: usize = 8;
/// Bytes of the secret: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;
/// Longest token or signing request the join endpoint reads: a real one is under 1 KiB.
pub const MAX_JOIN_INPUT: usize = 8 * 1024;

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    secret: [u8; SECRET_BYTES],
    /// BLAKE3 of the cluster CA certificate's DER bytes.
    pub ca_fingerprint: [u8; 32],
}

impl fmt::Debug for Token {
    // Never print the secret: tokens end up in logs through `?token`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("id", &self.id).finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The fingerprint a token carries for a CA certificate (DER).
pub fn ca_fingerprint(ca_der: &[u8]) -> [u8; 32] {
    *blake3::hash(ca_der).as_bytes()
}

/// The fingerprint of the first certificate in a PEM text (the cluster's `ca.pem`).
pub fn ca_fingerprint_pem(ca_pem: &str) -> anyhow::Result<[u8; 32]> {
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("parse the CA certificate: {e}"))?;
    Ok(ca_fingerprint(der.as_ref()))
}

impl Token {
    /// A new random token for the CA with `ca_fingerprint`.
    pub fn generate(ca_fingerprint: [u8; 32]) -> Token {
        let id: [u8; ID_BYTES] = rand::random();
        Token {
            id: hex(&id),
            secret: rand::random(),
            ca_fingerprint,
        }
    }

    /// Parses `mosaic-join-v1.ID.SECRET.CAFP` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Token, Refusal> {
        let mut parts = text.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret), Some(fp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refusal::Malformed);
        };
        let id_ok = unhex::<ID_BYTES>(id).is_some();
        match (id_ok, unhex::<SECRET_BYTES>(secret), unhex::<32>(fp)) {
            (true, Some(secret), Some(ca_fingerprint)) => Ok(Token {
                id: id.to_ascii_lowercase(),
                secret,
                ca_fingerprint,
            }),
            _ => Err(Refusal::Malformed),
        }
    }

    /// The text form the node is given. Contains the secret: show it only to the admin.
    pub fn secret_text(&self) -> String {
        format!(
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.id,
            hex(&self.secret),
            hex(&self.ca_fingerprint)
        )
    }

    /// What the master stores instead of the secret.
    pub fn secret_hash(&self) -> String {
        blake3::hash(&self.secret).to_hex().to_string()
    }
}

/// What the master keeps of an issued token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    /// BLAKE3 of the secret, hex.
    pub secret_hash: String,
    pub role: Role,
    pub name: String,
    pub expires_unix: u64,
}

/// Why a token was refused; the text is what the audit log and the joiner see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token of this format.
    Malformed,
    /// No token with this id was issued.
    Unknown,
    /// The id exists but the secret (or the CA) does not match: someone made it up.
    Forged,
    Expired,
    /// Tokens are single use.
    Used,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::Forged => "forged",
            Refusal::Expired => "expired",
            Refusal::Used => "used",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides whether `token` may be redeemed now: the pure rule behind the join endpoint.
/// `record` is what was issued under the token's id, `used` whether it was redeemed before,
/// `ca` the fingerprint of this cluster's CA.
pub fn check(
    token: &Token,
    record: Option<&TokenRecord>,
    used: bool,
    ca: &[u8; 32],
    now_unix: u64,
) -> Result<(), Refusal> {
    let record = record.ok_or(Refusal::Unknown)?;
    // blake3::Hash compares in constant time; the hex form is only for the file.
    let stored = blake3::Hash::from_hex(&record.secret_hash).map_err(|_| Refusal::Forged)?;
    if blake3::hash(&token.secret) != stored || &token.ca_fingerprint != ca {
        return Err(Refusal::Forged);
    }
    if used {
        return Err(Refusal::Used);
    }
    if now_unix >= record.expires_unix {
        return Err(Refusal::Expired);
    }
    Ok(())
}

/// Accepts a server only if it presents a chain through the CA the token names: the
/// joiner's only trust anchor before it has a credential.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| ca_fingerprint(c.as_ref()) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the join endpoint did not present the CA the token names (wrong address, \
                     or not this cluster's master)"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("pinned CA verifier: {e}")))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Redeems `token` at the master's join endpoint `addr`: makes a key pair, proves the
/// endpoint holds a certificate of the token's CA, and returns the signed credential
/// (not yet written anywhere). Everything within `timeout`.
pub async fn redeem(addr: &str, token: &Token, timeout: Duration) -> FsResult<IssuedCredential> {
    let key = rcgen::KeyPair::generate()
        .map_err(|e| FsError::internal(format!("generate a key: {e}")))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| FsError::internal(format!("make a signing request: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| FsError::internal(format!("select TLS 1.3: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: token.ca_fingerprint,
            provider,
        }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(Role::Master.dns_name())
        .map_err(|e| FsError::internal(format!("server name: {e}")))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| FsError::Unavailable(format!("connect to join endpoint {addr}: {e}")))?;
        let stream = connector.connect(name, tcp).await.map_err(|e| {
            FsError::Unavailable(format!("TLS handshake with join endpoint {addr}: {e}"))
        })?;
        let client = crate::rpc::JoinClient::new(
            tarpc::client::Config::default(),
            crate::rpc::transport(stream),
        )
        .spawn();
        client
            .join(crate::rpc::ctx(timeout), token.secret_text(), csr)
            .await
            .map_err(|e| FsError::Unavailable(format!("join request to {addr}: {e}")))?
    };
    let joined = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FsError::TimedOut(format!("join at {addr}")))??;
    // The CA the master returns must be the one the token pinned.
    let ca_ok = ca_fingerprint_pem(&joined.ca_pem)
        .map(|fp| fp == token.ca_fingerprint)
        .unwrap_or(false);
    if !ca_ok {
        return Err(FsError::Invalid(
            "the join endpoint returned a CA other than the token's".into(),
        ));
    }
    Ok(IssuedCredential {
        cert_pem: joined.cert_pem,
        key_pem: key.serialize_pem(),
        ca_pem: joined.ca_pem,
        serial: joined.serial,
    })
}

/// Redeems the token `text` at `addr` and writes the credential to `dir` (cert.pem, key.pem
/// 0600, ca.pem), checking that it is for `role`. For daemons started with `--join-token`.
pub async fn redeem_into(
    addr: &str,
    text: &str,
    dir: &std::path::Path,
    role: Role,
    timeout: Duration,
) -> anyhow::Result<()> {
    let token = Token::parse(text).map_err(|_| {
        anyhow::anyhow!(
            "the join token is malformed: expected {TOKEN_PREFIX}.ID.SECRET.CAFP as printed by \
             `mosaic-master issue-token`"
        )
    })?;
    let issued = redeem(addr, &token, timeout)
        .await
        .with_context(|| format!("redeem join token {} at {addr}", token.id))?;
    let tls = issued.tls().context("load the joined credential")?;
    if tls.identity().role != role {
        anyhow::bail!(
            "the join token is for a {}, not a {role}: issue one with `mosaic-master issue-token \
             {role} NAME`",
            tls.identity().role
        );
    }
    issued.write_to(dir)?;
    tracing::info!(identity = %tls.identity(), dir = %dir.display(), "joined the cluster with a one-time token");
    Ok(())
}

/// How long a join (connect, handshake, signing) may take on a loaded machine.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The join half of the TLS flags: lives here, beside the redemption it drives, so that
/// `tls` does not depend on `join` (which depends on `tls`).
impl TlsArgs {
    /// Redeems --join-token (or --join-token-file) into --credentials DIR when DIR holds no
    /// certificate yet; does nothing without a token. A process restarted with the same
    /// flags finds its certificate and does not try the (spent) token again.
    pub async fn join_if_asked(&self, role: Role) -> anyhow::Result<()> {
        let token = match (&self.join_token, &self.join_token_file) {
            (Some(token), _) => token.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("read join token file {}", file.display()))?,
            (None, None) => return Ok(()),
        };
        let dir = self.credentials.as_ref().context(
            "--join-token needs --credentials DIR: the directory the new credential is written to",
        )?;
        if dir.join(CERT_FILE).exists() {
            tracing::info!(dir = %dir.display(), "credential present: join token not used");
            return Ok(());
        }
        let addr = self
            .join
            .as_deref()
            .context("--join-token needs --join ADDR (the master's join_listen address)")?;
        redeem_into(addr, &token, dir, role, JOIN_TIMEOUT).await
    }

    /// [`Self::join_if_asked`] for a process without a runtime yet (the mount, which forks
    /// later): builds a one-thread runtime only when there is a token, and drops it again.
    pub fn join_if_asked_blocking(&self, role: Role) -> anyhow::Result<()> {
        if self.join_token.is_none() && self.join_token_file.is_none() {
            return Ok(());
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start a runtime for the join")?
            .block_on(self.join_if_asked(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: &Token, expires_unix: u64) -> TokenRecord {
        TokenRecord {
            id: token.id.clone(),
            secret_hash: token.secret_hash(),
            role: Role::Chunkserver,
            name: "cs9".into(),
            expires_unix,
        }
    }

    #[test]
    fn tokens_round_trip_and_hide_their_secret() {
        let token = Token::generate([7; 32]);
        let text = token.secret_text();
        assert!(text.starts_with("mosaic-join-v1."));
        assert_eq!(Token::parse(&format!(" {text}\n")), Ok(token.clone()));
        assert!(!format!("{token:?}").contains(&hex(&token.secret)));
        for bad in [
            "",
            "mosaic-join-v1",
            &text.replace("mosaic-join-v1", "mosaic-join-v2"),
            &format!("{text}.00"),
            &text[..text.len() - 1],
            &text.replace('.', ":"),
        ] {
            assert_eq!(Token::parse(bad), Err(Refusal::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn check_table() {
        let ca = [7u8; 32];
        let token = Token::generate(ca);
        let mut forged = token.clone();
        forged.secret[0] ^= 1;
        let mut other_ca = token.clone();
        other_ca.ca_fingerprint[0] ^= 1;
        let rec = record(&token, 1_000);
        // token, what was issued under its id, used before, now, the verdict
        type Case<'a> = (
            &'a Token,
            Option<&'a TokenRecord>,
            bool,
            u64,
            Result<(), Refusal>,
        );
        let cases: &[Case] = &[
            (&token, Some(&rec), false, 999, Ok(())),
            (&token, None, false, 999, Err(Refusal::Unknown)),
            (&forged, Some(&rec), false, 999, Err(Refusal::Forged)),
            (&other_ca, Some(&rec), false, 999, Err(Refusal::Forged)),
            (&token, Some(&rec), true, 999, Err(Refusal::Used)),
            (&token, Some(&rec), false, 1_000, Err(Refusal::Expired)),
            // A forged secret is called forged even when the token also expired or was used:
            // the log must not tell a guesser which ids exist and are spent.
            (&forged, Some(&rec), true, 5_000, Err(Refusal::Forged)),
        ];
        for (i, (token, record, used, now, want)) in cases.iter().enumerate() {
            assert_eq!(check(token, *record, *used, &ca, *now), *want, "case {i}");
        }
    }
}
