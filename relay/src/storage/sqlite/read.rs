//! SQLite's event reads, on pooled read-only connections.

use rusqlite::params;

use super::SqliteStore;
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
        let out = (|| {
            let map = |r: &rusqlite::Row| {
                Ok(StoredEvent {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    json: r.get(2)?,
                })
            };
            let mut out = Vec::new();
            match names {
                None => {
                    let mut stmt = conn.prepare_cached(
                        "SELECT id, name, data FROM events WHERE run = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    )?;
                    for row in stmt.query_map(params![run, after as i64, limit as i64], map)? {
                        out.push(row?);
                    }
                }
                Some(names) => {
                    let placeholders = vec!["?"; names.len()].join(",");
                    let sql = format!(
                        "SELECT id, name, data FROM events WHERE run = ? AND id > ? AND name IN ({placeholders}) ORDER BY id LIMIT ?"
                    );
                    let mut stmt = conn.prepare(&sql)?;
                    let mut args: Vec<rusqlite::types::Value> =
                        vec![run.to_string().into(), (after as i64).into()];
                    args.extend(names.iter().map(|n| n.clone().into()));
                    args.push((limit as i64).into());
                    for row in stmt.query_map(rusqlite::params_from_iter(args), map)? {
                        out.push(row?);
                    }
                }
            }
            Ok::<_, StoreError>(out)
        })();
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
        let out = (|| {
            let filter = names.map_or(String::new(), |n| {
                format!(" AND name IN ({})", vec!["?"; n.len()].join(","))
            });
            let sql = format!(
                "SELECT id, name, data FROM events WHERE run = ? AND id < ?{filter} ORDER BY id DESC LIMIT ?"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut args: Vec<rusqlite::types::Value> = vec![
                run.to_string().into(),
                (before.unwrap_or(i64::MAX as u64).min(i64::MAX as u64) as i64).into(),
            ];
            args.extend(
                names
                    .iter()
                    .flat_map(|n| n.iter())
                    .map(|n| n.clone().into()),
            );
            args.push((limit as i64).into());
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                Ok(StoredEvent {
                    id: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    json: r.get(2)?,
                })
            })?;
            Ok::<_, StoreError>(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })();
        self.give_back(conn);
        out
    }
}
