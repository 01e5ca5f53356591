//! Uploaded media (images), as rows beside the run's events ([`MediaDb`]): addressed by
//! the SHA-256 of their bytes, so an upload retried is stored once, and deleted with the
//! run in the same transaction as its events. Both backends keep the bytes in the
//! database (SQLite: a BLOB column; PostgreSQL: `bytea`) rather than in files or large
//! objects: one place to back up and to copy with `stepwatch migrate`, no orphan files
//! after a crash, a run's deletion taking its media in one transaction, and every relay
//! on a shared database serving every image. Items are capped (16 MiB by default), which
//! keeps a row well inside what either database handles comfortably.

use super::error::StoreError;

/// What is known of one stored item, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha: String,
    /// As told by the bytes (`image/png`, `image/jpeg`, `image/webp`).
    pub mime: String,
    pub width: u32,
    pub height: u32,
    pub size: u64,
}

/// What [`MediaDb::put_media`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Stored now.
    Stored,
    /// The run held these bytes already.
    Held,
    /// Storing them would take the run's media past `max_run`; `used` is held now.
    RunFull { used: u64 },
}

/// Media rows, implemented by each backend with its own SQL.
pub trait MediaDb: Send + Sync {
    /// Stores `bytes` under `row.sha` for `run`, unless that would take the run's media
    /// past `max_run` bytes in all (checked in the same transaction as the insert).
    fn put_media(
        &self,
        run: &str,
        row: &MediaRow,
        bytes: &[u8],
        max_run: u64,
    ) -> Result<Put, StoreError>;
    /// The item's row, without its bytes.
    fn media_row(&self, run: &str, sha: &str) -> Result<Option<MediaRow>, StoreError>;
    /// The item's row and bytes.
    fn media_bytes(&self, run: &str, sha: &str) -> Result<Option<(MediaRow, Vec<u8>)>, StoreError>;
    /// Bytes of media the run holds, and how many items.
    fn media_used(&self, run: &str) -> Result<(u64, u64), StoreError>;
}
