//! The cluster certificate authority: makes the CA, loads it back and signs credentials,
//! whole (`issue`) or over a node's signing request (`sign_request`, the join endpoint).
//! Only the master and the admin commands hold the CA key; the other crates load and check
//! what it signed (`common::tls`). This module never writes a file but the CA's own two
//! (through `write_to`), and never decides who may have a credential: its callers do.

use anyhow::Context as _;
use common::tls::{IssuedCredential, Role, check_name, check_secret_file, write_new};
use std::path::Path;

/// Leaf certificates live ten years: revocation, not expiry, is how a node is shut out,
/// and an expiry in the middle of the night would stop a cluster for no security gain.
const LEAF_VALIDITY_DAYS: i64 = 3650;
/// The CA outlives every leaf it can sign.
const CA_VALIDITY_DAYS: i64 = 2 * LEAF_VALIDITY_DAYS;
/// Clocks of different machines disagree a little; a certificate is valid from an hour
/// before it was made so a peer whose clock is behind does not refuse it.
const CLOCK_SKEW: time::Duration = time::Duration::hours(1);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cluster certificate authority: signs credentials. Its key stays with the admin
/// (in the master's state directory), never on chunkservers or clients.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pem: String,
}

fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero octet, so the DER bytes are exactly these 16
    // and the hex a peer reads back is the hex `issue` printed.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut rcgen::CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + time::Duration::days(days);
}

impl Ca {
    /// A new CA for the cluster named `cluster` (shown in its subject).
    pub fn generate(cluster: &str) -> anyhow::Result<Ca> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("MosaicFS cluster CA {cluster}"),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "MosaicFS");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, CA_VALIDITY_DAYS);
        let key = rcgen::KeyPair::generate().context("generate the CA key")?;
        let cert = params.self_signed(&key).context("self-sign the CA")?;
        let pem = cert.pem();
        Ok(Ca { cert, key, pem })
    }

    /// Loads a CA written by [`Ca::write_to`].
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Ca> {
        let pem = std::fs::read_to_string(cert_path)
            .with_context(|| format!("read CA certificate {}", cert_path.display()))?;
        check_secret_file(key_path, "private key")?;
        let key_pem = std::fs::read_to_string(key_path)
            .with_context(|| format!("read CA key {}", key_path.display()))?;
        let key = rcgen::KeyPair::from_pem(&key_pem)
            .with_context(|| format!("parse CA key {}", key_path.display()))?;
        let params = rcgen::CertificateParams::from_ca_cert_pem(&pem)
            .with_context(|| format!("parse CA certificate {}", cert_path.display()))?;
        // Re-signing with the same key and subject yields an equivalent issuer for the
        // leaves; the file's own bytes stay the CA that peers trust.
        let cert = params
            .self_signed(&key)
            .with_context(|| format!("CA key {} does not sign", key_path.display()))?;
        Ok(Ca { cert, key, pem })
    }

    /// Writes the CA certificate (0644) and key (0600); neither may exist yet.
    pub fn write_to(&self, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
        write_new(key_path, &self.key.serialize_pem(), 0o600)?;
        write_new(cert_path, &self.pem, 0o644)
    }

    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// Signs a new credential for `name` in `role`.
    pub fn issue(&self, role: Role, name: &str) -> anyhow::Result<IssuedCredential> {
        let key = rcgen::KeyPair::generate().context("generate a key")?;
        let (cert_pem, serial) = self.sign(role, name, &key)?;
        Ok(IssuedCredential {
            cert_pem,
            key_pem: key.serialize_pem(),
            ca_pem: self.pem.clone(),
            serial,
        })
    }

    /// Signs a certificate for `name` in `role` over the public key of a PEM certificate
    /// signing request (the join endpoint: the private key stays with the node). Only the
    /// request's key is used (its signature proves the requester holds the private key);
    /// role and name come from the caller, never from the request. Returns the
    /// certificate (PEM) and its serial.
    pub fn sign_request(
        &self,
        role: Role,
        name: &str,
        csr_pem: &str,
    ) -> anyhow::Result<(String, String)> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .context("parse and verify the certificate signing request")?;
        self.sign(role, name, &csr.public_key)
    }

    fn sign(
        &self,
        role: Role,
        name: &str,
        public_key: &impl rcgen::PublicKeyData,
    ) -> anyhow::Result<(String, String)> {
        check_name(name)?;
        let mut params = rcgen::CertificateParams::new(vec![role.dns_name()])
            .context("certificate parameters")?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, role.as_str());
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "MosaicFS");
        // Every node both dials and accepts (chunkservers dial the master and serve
        // clients; a client only dials, but one kind of certificate keeps issuing simple).
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let serial = random_serial();
        let serial_hex = hex(serial.as_ref());
        params.serial_number = Some(serial);
        validity(&mut params, LEAF_VALIDITY_DAYS);
        let cert = params
            .signed_by(public_key, &self.cert, &self.key)
            .context("sign the certificate")?;
        Ok((cert.pem(), serial_hex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::tls::Identity;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn issued_certificates_carry_role_name_and_serial() {
        let ca = Ca::generate("test").expect("ca");
        let issued = ca.issue(Role::Chunkserver, "cs1").expect("issue");
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem");
        let id = Identity::from_der(&der).expect("identity");
        assert_eq!(
            id,
            Identity {
                role: Role::Chunkserver,
                name: "cs1".into(),
                serial: issued.serial.clone()
            }
        );
        assert_eq!(id.serial.len(), 32);
    }

    #[test]
    fn a_loaded_ca_signs_certificates_the_original_ca_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::generate("test").expect("ca");
        ca.write_to(&dir.path().join("ca.pem"), &dir.path().join("ca.key"))
            .expect("write");
        let loaded =
            Ca::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key")).expect("load");
        let paths = loaded
            .issue(Role::Client, "c")
            .expect("issue")
            .write_to(&dir.path().join("c"))
            .expect("write");
        // The written ca.pem is the original CA's; loading builds the verifiers from it.
        let tls = paths.load().expect("load credential");
        assert_eq!(tls.identity().role, Role::Client);
    }

    #[test]
    fn a_readable_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::generate("test").expect("ca");
        let paths = ca
            .issue(Role::Client, "c")
            .expect("issue")
            .write_to(dir.path())
            .expect("write");
        std::fs::set_permissions(&paths.key, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let err = paths.load().expect_err("must refuse");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
