//! The first exchange on every connection, right after the TLS handshake: the caller names
//! the protocol version it speaks and the service it wants; the server answers with its own
//! version and whether it accepts. Only then do tarpc frames flow.
//!
//! This is how one listen address serves several services (the master's filesystem, node
//! and admin services) and how two builds that speak different protocols refuse each other
//! with an error naming both versions, instead of failing on the first undecodable frame.
//! This module only reads and writes the two small fixed-size frames: which roles may call
//! which methods is `crate::authz`, never decided here.

use crate::{FsError, FsResult};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The wire protocol this build speaks. Bump it on any change to a service or a type that
/// crosses the wire; peers of another version are refused. Version 1 was the single
/// `Master` service without a preamble; 2 split it by caller.
pub const PROTOCOL_VERSION: u32 = 2;

/// Opens every caller's first frame, so a server can tell a MosaicFS preamble from the
/// first frame of an older build (a tarpc length prefix) and say so.
const MAGIC: [u8; 4] = *b"MOSA";

/// The services a connection may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// The master's service for filesystem clients (`rpc::MasterFs`).
    MasterFs,
    /// The master's service for storage nodes (`rpc::MasterNodes`).
    MasterNodes,
    /// The master's service for administrators and sentinels (`rpc::MasterAdmin`).
    MasterAdmin,
    /// A chunkserver's service (`rpc::ChunkServer`).
    ChunkServer,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::MasterFs,
        Service::MasterNodes,
        Service::MasterAdmin,
        Service::ChunkServer,
    ];

    fn code(self) -> u8 {
        match self {
            Service::MasterFs => 1,
            Service::MasterNodes => 2,
            Service::MasterAdmin => 3,
            Service::ChunkServer => 4,
        }
    }

    fn from_code(code: u8) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.code() == code)
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The server's answer codes.
const ACCEPTED: u8 = 0;
const VERSION_MISMATCH: u8 = 1;
const NOT_SERVED: u8 = 2;

/// Why a server refused a caller's preamble (what it logs and audits).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a MosaicFS preamble (a build older than protocol version 2?)")]
    NotAPreamble,
    #[error("the peer speaks protocol version {peer}, this build speaks {PROTOCOL_VERSION}")]
    Version { peer: u32 },
    #[error("service {0} is not served here")]
    NotServed(String),
    #[error("no preamble: {0}")]
    Io(String),
}

/// The caller's side: asks for `service` on `stream` and reads the answer, all within
/// `timeout`. A server of another version is an `Unavailable` error naming both versions.
pub async fn offer<S>(
    stream: &mut S,
    service: Service,
    addr: &str,
    timeout: Duration,
) -> FsResult<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut frame = [0u8; 9];
        frame[..4].copy_from_slice(&MAGIC);
        frame[4..8].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        frame[8] = service.code();
        stream.write_all(&frame).await?;
        stream.flush().await?;
        let mut answer = [0u8; 5];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(FsError::TimedOut(format!("protocol preamble with {addr}"))),
        Ok(Err(e)) => {
            // An older server reads our preamble as an absurd frame length and hangs up.
            return Err(FsError::Unavailable(format!(
                "{addr} closed the connection during the protocol preamble ({e}); it may \
                 speak a protocol older than version {PROTOCOL_VERSION}"
            )));
        }
        Ok(Ok(answer)) => answer,
    };
    let server_version = u32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]);
    match answer[4] {
        ACCEPTED => Ok(()),
        VERSION_MISMATCH => Err(FsError::Unavailable(format!(
            "protocol version mismatch: {addr} speaks version {server_version}, this build \
             speaks version {PROTOCOL_VERSION}"
        ))),
        NOT_SERVED => Err(FsError::Unavailable(format!(
            "{addr} does not serve {service} (protocol version {server_version})"
        ))),
        other => Err(FsError::Unavailable(format!(
            "{addr} answered the protocol preamble with unknown code {other}"
        ))),
    }
}

/// The server's side: reads the caller's preamble within `timeout` and answers it. Returns
/// the service asked for when this build speaks the caller's version and `served` lists it;
/// otherwise the caller has been told why (when it could be) and the connection should close.
pub async fn accept<S>(
    stream: &mut S,
    served: &[Service],
    timeout: Duration,
) -> Result<Service, Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frame = [0u8; 9];
    match tokio::time::timeout(timeout, stream.read_exact(&mut frame)).await {
        Err(_) => return Err(Refusal::Io(format!("none within {timeout:?}"))),
        Ok(Err(e)) => return Err(Refusal::Io(e.to_string())),
        Ok(Ok(_)) => {}
    }
    if frame[..4] != MAGIC {
        return Err(Refusal::NotAPreamble);
    }
    let version = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let (code, verdict) = if version != PROTOCOL_VERSION {
        (VERSION_MISMATCH, Err(Refusal::Version { peer: version }))
    } else {
        match Service::from_code(frame[8]).filter(|s| served.contains(s)) {
            Some(service) => (ACCEPTED, Ok(service)),
            None => (
                NOT_SERVED,
                Err(Refusal::NotServed(format!("code {}", frame[8]))),
            ),
        }
    };
    let mut answer = [0u8; 5];
    answer[..4].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    answer[4] = code;
    let reply = async {
        stream.write_all(&answer).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, reply).await {
        Ok(Ok(())) => verdict,
        Ok(Err(e)) => Err(Refusal::Io(e.to_string())),
        Err(_) => Err(Refusal::Io(format!("answer not taken within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_matching_preamble_names_the_service() {
        for service in Service::ALL {
            let (mut a, mut b) = tokio::io::duplex(64);
            let (offered, accepted) = tokio::join!(
                offer(&mut a, service, "peer", T),
                accept(&mut b, &Service::ALL, T)
            );
            offered.expect("offer");
            assert_eq!(accepted, Ok(service));
        }
    }

    #[tokio::test]
    async fn a_service_not_served_is_refused_on_both_ends() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let (offered, accepted) = tokio::join!(
            offer(&mut a, Service::MasterAdmin, "peer", T),
            accept(&mut b, &[Service::ChunkServer], T)
        );
        let err = offered.expect_err("refused").to_string();
        assert!(err.contains("does not serve MasterAdmin"), "{err}");
        assert!(matches!(accepted, Err(Refusal::NotServed(_))));
    }

    #[tokio::test]
    async fn another_version_is_refused_with_both_versions_named() {
        // A caller from a future build: its preamble carries version 3.
        let (mut a, mut b) = tokio::io::duplex(64);
        let caller = async {
            let mut frame = [0u8; 9];
            frame[..4].copy_from_slice(&MAGIC);
            frame[4..8].copy_from_slice(&3u32.to_be_bytes());
            frame[8] = Service::MasterFs.code();
            a.write_all(&frame).await.expect("write");
            let mut answer = [0u8; 5];
            a.read_exact(&mut answer).await.expect("read");
            answer
        };
        let (answer, accepted) = tokio::join!(caller, accept(&mut b, &Service::ALL, T));
        assert_eq!(accepted, Err(Refusal::Version { peer: 3 }));
        assert_eq!(
            accepted.unwrap_err().to_string(),
            "the peer speaks protocol version 3, this build speaks 2"
        );
        assert_eq!(answer[4], VERSION_MISMATCH);

        // A server from another build answers with its version: the caller names both.
        let (mut a, mut b) = tokio::io::duplex(64);
        let server = async {
            let mut frame = [0u8; 9];
            b.read_exact(&mut frame).await.expect("read");
            let mut answer = [0u8; 5];
            answer[..4].copy_from_slice(&7u32.to_be_bytes());
            answer[4] = VERSION_MISMATCH;
            b.write_all(&answer).await.expect("write");
        };
        let (offered, ()) = tokio::join!(offer(&mut a, Service::MasterFs, "master:1", T), server);
        assert_eq!(
            offered.expect_err("refused").to_string(),
            FsError::Unavailable(
                "protocol version mismatch: master:1 speaks version 7, this build speaks version 2"
                    .into()
            )
            .to_string()
        );
    }

    #[tokio::test]
    async fn an_old_tarpc_frame_is_not_a_preamble() {
        // A version-1 caller starts with a 4-byte big-endian frame length.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 40, 1, 2, 3, 4, 5])
            .await
            .expect("write");
        assert_eq!(
            accept(&mut b, &Service::ALL, T).await,
            Err(Refusal::NotAPreamble)
        );
    }
}
