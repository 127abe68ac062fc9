//! The client's connection to the master: one multiplexed tarpc connection, re-established
//! on failure, with every call retried inside the configured retry window.
//!
//! A call that cannot reach the master within the window fails with `Unavailable` (EIO) or
//! `TimedOut`; a mount never hangs forever. Application errors (`NotFound`, `Exists`, ...) are
//! returned at once; `Unavailable` answers from the master (e.g. too few chunkservers online)
//! are retried, because they usually pass when a node comes back.

use common::rpc::{MasterClient, connect_master, ctx};
use common::{FsError, FsResult};
use parking_lot::Mutex;
use std::future::Future;
use std::time::{Duration, Instant};
use tarpc::client::RpcError;
use tarpc::context::Context;

/// First pause between retries; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between retries: short enough to notice a returning master quickly.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

pub struct MetaConn {
    addr: String,
    /// The mount's client credential; `None` only for an in-process client (tests), which
    /// cannot reconnect.
    tls: Option<common::tls::Tls>,
    client: Mutex<Option<MasterClient>>,
    rpc_timeout: Duration,
    retry_window: Duration,
}

impl MetaConn {
    pub fn new(
        addr: String,
        tls: common::tls::Tls,
        rpc_timeout: Duration,
        retry_window: Duration,
    ) -> MetaConn {
        MetaConn {
            addr,
            tls: Some(tls),
            client: Mutex::new(None),
            rpc_timeout,
            retry_window,
        }
    }

    /// Uses an existing client (tests: an in-process channel).
    pub fn with_client(
        client: MasterClient,
        rpc_timeout: Duration,
        retry_window: Duration,
    ) -> MetaConn {
        MetaConn {
            addr: String::from("in-process"),
            tls: None,
            client: Mutex::new(Some(client)),
            rpc_timeout,
            retry_window,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn client(&self) -> FsResult<MasterClient> {
        if let Some(client) = self.client.lock().clone() {
            return Ok(client);
        }
        let tls = self.tls.as_ref().ok_or_else(|| {
            FsError::Unavailable("the in-process master connection is gone".into())
        })?;
        let client = connect_master(&self.addr, tls, self.rpc_timeout).await?;
        *self.client.lock() = Some(client.clone());
        Ok(client)
    }

    /// The master client (connecting if needed), for a one-off call from a background task
    /// that must not borrow this connection; such a call is not retried.
    pub(crate) async fn handle(&self) -> FsResult<MasterClient> {
        self.client().await
    }

    fn drop_client(&self) {
        *self.client.lock() = None;
    }

    /// Calls the master, retrying transport failures and `Unavailable` answers until the
    /// retry window has passed.
    pub async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> FsResult<T>
    where
        F: Fn(MasterClient, Context) -> Fut,
        Fut: Future<Output = Result<FsResult<T>, RpcError>>,
    {
        let give_up = Instant::now() + self.retry_window;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let err = match self.client().await {
                Ok(client) => match f(client, ctx(self.rpc_timeout)).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(FsError::Unavailable(msg))) => FsError::Unavailable(msg),
                    Ok(Err(err)) => return Err(err),
                    Err(rpc) => {
                        self.drop_client();
                        FsError::from(rpc)
                    }
                },
                Err(err) => err,
            };
            if Instant::now() + backoff >= give_up {
                tracing::warn!(what, error = %err, "master call failed after the retry window");
                return Err(match err {
                    FsError::TimedOut(m) => FsError::TimedOut(m),
                    other => FsError::Unavailable(format!("master {}: {other}", self.addr)),
                });
            }
            tracing::debug!(what, error = %err, "master call failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
