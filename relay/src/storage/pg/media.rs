//! PostgreSQL's media rows ([`MediaDb`]): the bytes in a `bytea` column (deleted with the
//! run's rows, unlike large objects, which would need their own unlinking), the run's
//! total checked under a per-run advisory lock so two relays cannot both pass the limit.

use super::PgStore;
use crate::clock::now;
use crate::storage::error::StoreError;
use crate::storage::media::{MediaDb, MediaRow, Put};

fn to_row(sha: &str, r: &postgres::Row) -> MediaRow {
    MediaRow {
        sha: sha.to_string(),
        mime: r.get(0),
        width: r.get::<_, i32>(1) as u32,
        height: r.get::<_, i32>(2) as u32,
        size: r.get::<_, i64>(3) as u64,
    }
}

impl MediaDb for PgStore {
    fn put_media(
        &self,
        run: &str,
        m: &MediaRow,
        bytes: &[u8],
        max_run: u64,
    ) -> Result<Put, StoreError> {
        self.pool.with_conn(|c| {
            let mut tx = c.client.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('media:' || $1, 0))",
                &[&run],
            )?;
            if tx
                .query_opt(
                    "SELECT 1 FROM media WHERE run = $1 AND sha = $2",
                    &[&run, &m.sha],
                )?
                .is_some()
            {
                return Ok(Put::Held);
            }
            let used: i64 = tx
                .query_one(
                    "SELECT COALESCE(SUM(size), 0)::BIGINT FROM media WHERE run = $1",
                    &[&run],
                )?
                .get(0);
            if used as u64 + bytes.len() as u64 > max_run {
                return Ok(Put::RunFull { used: used as u64 });
            }
            tx.execute(
                "INSERT INTO media (run, sha, mime, width, height, size, created, data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &run,
                    &m.sha,
                    &m.mime,
                    &(m.width as i32),
                    &(m.height as i32),
                    &(bytes.len() as i64),
                    &now(),
                    &bytes,
                ],
            )?;
            tx.commit()?;
            Ok(Put::Stored)
        })
    }

    fn media_row(&self, run: &str, sha: &str) -> Result<Option<MediaRow>, StoreError> {
        self.pool.read_conn(|c| {
            Ok(c.client
                .query_opt(
                    "SELECT mime, width, height, size FROM media WHERE run = $1 AND sha = $2",
                    &[&run, &sha],
                )?
                .map(|r| to_row(sha, &r)))
        })
    }

    fn media_bytes(&self, run: &str, sha: &str) -> Result<Option<(MediaRow, Vec<u8>)>, StoreError> {
        self.pool.read_conn(|c| {
            Ok(c.client
                .query_opt(
                    "SELECT mime, width, height, size, data FROM media WHERE run = $1 AND sha = $2",
                    &[&run, &sha],
                )?
                .map(|r| (to_row(sha, &r), r.get::<_, Vec<u8>>(4))))
        })
    }

    fn media_used(&self, run: &str) -> Result<(u64, u64), StoreError> {
        self.pool.read_conn(|c| {
            let r = c.client.query_one(
                "SELECT COALESCE(SUM(size), 0)::BIGINT, COUNT(*) FROM media WHERE run = $1",
                &[&run],
            )?;
            Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
        })
    }
}
