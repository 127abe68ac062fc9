//! Store calls off the async workers. SQLite blocks, so the service and the cluster control
//! run store calls on a blocking thread inside the request's span; database failures are
//! logged here, once, and ordinary answers (ENOENT and friends) are not errors of the master.
//!
//! This module holds no state and makes no decision: it only moves a call to a thread.

use crate::store::MetaStore;
use common::{FsError, FsResult};
use std::sync::Arc;
use tracing::{Instrument as _, Span};

/// Runs `f` over `store` on a blocking thread inside `span`.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<dyn MetaStore>,
    span: Span,
    f: impl FnOnce(&dyn MetaStore) -> FsResult<T> + Send + 'static,
) -> FsResult<T> {
    let store = Arc::clone(store);
    let inner_span = span.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _entered = inner_span.enter();
        f(&*store)
    })
    .instrument(span.clone())
    .await
    .unwrap_or_else(|e| Err(FsError::internal(format!("store task failed: {e}"))));
    if let Err(err @ (FsError::Io(_) | FsError::Internal(_))) = &result {
        span.in_scope(|| tracing::error!(error = %err, "metadata store failure"));
    }
    result
}
