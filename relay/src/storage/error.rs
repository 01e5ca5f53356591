//! Storage failures, the same for every backend.

/// Storage failures, the same for every backend. The HTTP layer maps each variant to one
/// status: `Limit` is the client's to fix (4xx), `Full` and `Unavailable` are worth retrying
/// (503 with `Retry-After`), the rest are the relay's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage full (no space left on the relay's disk): nothing of this request was stored; retry once space is freed")]
    Full,
    /// Storage cannot take this request now (file not writable, database server down);
    /// the message says why, and that retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Incompatible(String),
    /// The request breaks a limit: the client must change it, not retry.
    #[error("{0}")]
    Limit(String),
    /// Any other failure inside the backend.
    #[error("storage error: {0}")]
    Backend(String),
}

impl StoreError {
    /// The storage file or directory cannot be written.
    pub fn unwritable(detail: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(format!(
            "storage is not writable ({detail}): nothing of this request was stored; retry later"
        ))
    }

    /// The database server failed or is unreachable.
    pub fn database(detail: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(format!(
            "database unavailable ({detail}): nothing of this request was stored; retry later"
        ))
    }

    /// A lock was poisoned by a panic in another request.
    pub fn poisoned() -> Self {
        StoreError::Backend("storage lock poisoned".into())
    }
}
