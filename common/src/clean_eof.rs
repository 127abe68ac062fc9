//! A TLS peer that closes its socket without a `close_notify` alert (a CLI call that exits
//! after its answer, a killed client) makes rustls report `UnexpectedEof`, and the RPC server
//! then logged a WARN "Requests stream errored out" for every such call. [`CleanEof`] reads
//! that as a plain end of stream. It is safe here: every RPC message is length-framed, so a
//! connection cut inside a frame is still an error (the framing sees bytes missing); only a
//! close between whole messages, which loses nothing, becomes a clean end.
//!
//! It never hides any other error, and never applies to writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner` with a missing `close_notify` read as end of stream.
#[derive(Debug)]
pub struct CleanEof<S> {
    inner: S,
}

impl<S> CleanEof<S> {
    pub fn new(inner: S) -> CleanEof<S> {
        CleanEof { inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CleanEof<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!("peer closed the connection without close_notify");
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CleanEof<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// Yields `data`, then fails with `end`.
    struct Script {
        data: Vec<u8>,
        end: io::ErrorKind,
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.data.is_empty() {
                return Poll::Ready(Err(self.end.into()));
            }
            let n = self.data.len().min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_missing_close_notify_is_an_end_and_other_errors_stay() {
        let mut clean = CleanEof::new(Script {
            data: b"whole".to_vec(),
            end: io::ErrorKind::UnexpectedEof,
        });
        let mut out = Vec::new();
        clean.read_to_end(&mut out).await.expect("clean end");
        assert_eq!(out, b"whole");

        let mut reset = CleanEof::new(Script {
            data: b"x".to_vec(),
            end: io::ErrorKind::ConnectionReset,
        });
        let err = reset.read_to_end(&mut Vec::new()).await.expect_err("reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
