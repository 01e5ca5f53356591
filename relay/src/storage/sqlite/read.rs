//! SQLite's event reads, on pooled read-only connections: the shared chunk walk
//! ([`crate::storage::chunks`]) over [`LiteChunks`].

use super::chunks::LiteChunks;
use super::SqliteStore;
use crate::storage::chunks;
use crate::storage::error::StoreError;
use crate::storage::types::StoredEvent;
#[cfg(doc)]
use crate::storage::Storage;

impl SqliteStore {
    /// Events with id > `after`, oldest first ([`Storage::events`]).
    pub(super) fn read_after(
        &self,
        run: &str,
        after: u64,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.reader()?;
        let out = chunks::read_after(&mut LiteChunks(&conn), run, after, limit, names);
        self.give_back(conn);
        out
    }

    /// Events with id < `before`, newest first ([`Storage::events_desc`]).
    pub(super) fn read_before(
        &self,
        run: &str,
        before: Option<u64>,
        limit: usize,
        names: Option<&[String]>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.reader()?;
        let before = before.unwrap_or(u64::MAX);
        let out = chunks::read_before(&mut LiteChunks(&conn), run, before, limit, names);
        self.give_back(conn);
        out
    }
}
