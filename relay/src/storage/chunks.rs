//! Events as stored: one **chunk** per committed batch and event name, written once for
//! every backend.
//!
//! A batch's events are not rows of their own. Each committed batch becomes a few rows,
//! one per event name in it: the events' wire JSON as it goes out on the stream, one per
//! line, plus an index of their ids (LEB128 deltas from the batch's first id, `base`).
//! A run's events are then read back by walking its chunks in `last_id` order:
//!
//! - the ids of one chunk increase, and chunks never share an id;
//! - every id of a chunk is at least its `base` and at most its `last_id`;
//! - a later batch's ids are all above an earlier batch's (ids are assigned in commit
//!   order under the writer lock), so chunks of different batches never interleave;
//!   chunks of one batch (one per name) may.
//!
//! From these, [`read_after`] knows when it has the `limit` smallest ids above `after`:
//! once the next chunk's `base` is above the `limit`-th id it holds, no later chunk can
//! hold a smaller one. [`read_before`] walks `last_id` downwards and stops once the next
//! chunk's `last_id` is below its `limit`-th largest id. A name filter reads each
//! name's own chunks (their `(run, name, last_id)` index) and merges them.
//!
//! Storing a batch costs a handful of row writes instead of one per event, and reading
//! one kind of event (the newest logs of a 10-million-step run) touches only its
//! chunks. A backend supplies the SQL through [`ChunkDb`].

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::StoreError;
use super::types::StoredEvent;

/// One stored chunk: the events of one name from one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    pub name: String,
    /// The first id of the batch the chunk came from.
    pub base: u64,
    pub first_id: u64,
    pub last_id: u64,
    /// How many events the chunk holds.
    pub n: u64,
    /// Their ids, LEB128 deltas: the first from `base`, each next from the one before.
    pub ids: Vec<u8>,
    /// Their JSON, one per line (`\n` after each; JSON holds no raw newline).
    pub data: Vec<u8>,
}

/// Chunk rows fetched by a read's first query; each next query fetches twice as many,
/// up to [`MAX_ROWS_PER_QUERY`]. A chunk may hold a whole batch (100 KB and more), and
/// most reads need one or two.
const FIRST_ROWS_PER_QUERY: usize = 2;
const MAX_ROWS_PER_QUERY: usize = 64;

/// The backend's SQL for chunks.
pub(crate) trait ChunkDb {
    /// Chunks of `run` (of `name` only, when given) with `last_id > after`, by
    /// `last_id` ascending, at most `rows`.
    fn chunks_after(
        &mut self,
        run: &str,
        name: Option<&str>,
        after: u64,
        rows: usize,
    ) -> Result<Vec<ChunkRow>, StoreError>;

    /// Chunks of `run` (of `name` only, when given) with `first_id < before` and
    /// `last_id < below`, by `last_id` descending, at most `rows`.
    fn chunks_before(
        &mut self,
        run: &str,
        name: Option<&str>,
        before: u64,
        below: u64,
        rows: usize,
    ) -> Result<Vec<ChunkRow>, StoreError>;
}

/// The chunks of one committed batch: its events grouped by name, in id order.
pub fn pack(stored: &[Arc<StoredEvent>]) -> Vec<ChunkRow> {
    let Some(base) = stored.first().map(|e| e.id) else {
        return Vec::new();
    };
    let mut by_name: BTreeMap<&str, ChunkRow> = BTreeMap::new();
    for e in stored {
        let c = by_name.entry(&*e.name).or_insert_with(|| ChunkRow {
            name: e.name.to_string(),
            base,
            first_id: e.id,
            last_id: base,
            n: 0,
            ids: Vec::new(),
            data: Vec::new(),
        });
        write_varint(&mut c.ids, e.id - c.last_id);
        c.last_id = e.id;
        c.n += 1;
        c.data.extend_from_slice(e.json.as_bytes());
        c.data.push(b'\n');
    }
    by_name.into_values().collect()
}

/// The chunk's events whose id passes `keep`, appended to `out` in id order.
pub fn unpack(
    row: &ChunkRow,
    mut keep: impl FnMut(u64) -> bool,
    out: &mut Vec<StoredEvent>,
) -> Result<(), StoreError> {
    let corrupt = || {
        StoreError::Corrupt(format!(
            "chunk {}..{} ({}) does not decode",
            row.first_id, row.last_id, row.name
        ))
    };
    let mut lines = row.data.split(|b| *b == b'\n');
    let (mut id, mut at) = (row.base, 0usize);
    let name = super::types::event_name(&row.name);
    for _ in 0..row.n {
        let delta = read_varint(&row.ids, &mut at).ok_or_else(corrupt)?;
        id += delta;
        let line = lines.next().ok_or_else(corrupt)?;
        if keep(id) {
            let json = std::str::from_utf8(line).map_err(|_| corrupt())?;
            out.push(StoredEvent {
                id,
                name: name.clone(),
                json: json.to_string(),
            });
        }
    }
    Ok(())
}

/// Events of `run` with id > `after`, oldest first, at most `limit` (of `names` only,
/// when given).
pub(crate) fn read_after(
    db: &mut dyn ChunkDb,
    run: &str,
    after: u64,
    limit: usize,
    names: Option<&[String]>,
) -> Result<Vec<StoredEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut out = match names {
        None => walk_after(db, run, None, after, limit)?,
        Some(names) => {
            let mut all = Vec::new();
            for name in dedup(names) {
                all.extend(walk_after(db, run, Some(name), after, limit)?);
            }
            all.sort_by_key(|e| e.id);
            all
        }
    };
    out.truncate(limit);
    Ok(out)
}

/// Events of `run` with id < `before`, newest first, at most `limit` (of `names` only,
/// when given).
pub(crate) fn read_before(
    db: &mut dyn ChunkDb,
    run: &str,
    before: u64,
    limit: usize,
    names: Option<&[String]>,
) -> Result<Vec<StoredEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut out = match names {
        None => walk_before(db, run, None, before, limit)?,
        Some(names) => {
            let mut all = Vec::new();
            for name in dedup(names) {
                all.extend(walk_before(db, run, Some(name), before, limit)?);
            }
            all.sort_by_key(|e| std::cmp::Reverse(e.id));
            all
        }
    };
    out.truncate(limit);
    Ok(out)
}

fn dedup(names: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = names.iter().map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The `limit` smallest ids above `after` (sorted, maybe more than `limit`).
fn walk_after(
    db: &mut dyn ChunkDb,
    run: &str,
    name: Option<&str>,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out: Vec<StoredEvent> = Vec::new();
    let (mut cursor, mut per_query) = (after, FIRST_ROWS_PER_QUERY);
    'pages: loop {
        let rows = db.chunks_after(run, name, cursor, per_query)?;
        let full = rows.len() == per_query;
        per_query = (per_query * 2).min(MAX_ROWS_PER_QUERY);
        for row in &rows {
            if out.len() >= limit {
                out.sort_by_key(|e| e.id);
                out.truncate(limit);
                // No chunk from here on holds an id at or below `base`.
                if row.base > out[limit - 1].id {
                    break 'pages;
                }
            }
            unpack(row, |id| id > after, &mut out)?;
            cursor = row.last_id;
        }
        if !full {
            break;
        }
    }
    out.sort_by_key(|e| e.id);
    Ok(out)
}

/// The `limit` largest ids below `before` (newest first, maybe more than `limit`).
fn walk_before(
    db: &mut dyn ChunkDb,
    run: &str,
    name: Option<&str>,
    before: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out: Vec<StoredEvent> = Vec::new();
    let (mut below, mut per_query) = (u64::MAX, FIRST_ROWS_PER_QUERY);
    'pages: loop {
        let rows = db.chunks_before(run, name, before, below, per_query)?;
        let full = rows.len() == per_query;
        per_query = (per_query * 2).min(MAX_ROWS_PER_QUERY);
        for row in &rows {
            if out.len() >= limit {
                out.sort_by_key(|e| std::cmp::Reverse(e.id));
                out.truncate(limit);
                // Every later chunk's ids are at most its `last_id`, below this one's.
                if row.last_id < out[limit - 1].id {
                    break 'pages;
                }
            }
            let from = out.len();
            unpack(row, |id| id < before, &mut out)?;
            out[from..].reverse();
            below = row.last_id;
        }
        if !full {
            break;
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.id));
    Ok(out)
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0u32);
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Chunks in memory, answering as the SQL does.
    #[derive(Default)]
    struct Mem(Vec<ChunkRow>);

    impl ChunkDb for Mem {
        fn chunks_after(
            &mut self,
            _: &str,
            name: Option<&str>,
            after: u64,
            rows: usize,
        ) -> Result<Vec<ChunkRow>, StoreError> {
            let mut v: Vec<ChunkRow> = self
                .0
                .iter()
                .filter(|c| name.is_none_or(|n| c.name == n) && c.last_id > after)
                .cloned()
                .collect();
            v.sort_by_key(|c| c.last_id);
            v.truncate(rows);
            Ok(v)
        }

        fn chunks_before(
            &mut self,
            _: &str,
            name: Option<&str>,
            before: u64,
            below: u64,
            rows: usize,
        ) -> Result<Vec<ChunkRow>, StoreError> {
            let mut v: Vec<ChunkRow> = self
                .0
                .iter()
                .filter(|c| {
                    name.is_none_or(|n| c.name == n) && c.first_id < before && c.last_id < below
                })
                .cloned()
                .collect();
            v.sort_by_key(|c| std::cmp::Reverse(c.last_id));
            v.truncate(rows);
            Ok(v)
        }
    }

    /// A store of `batches` batches; event `id` is named by `name_of(id)`.
    fn store(batches: &[usize], name_of: impl Fn(u64) -> &'static str) -> (Mem, Vec<StoredEvent>) {
        let (mut mem, mut all, mut id) = (Mem::default(), Vec::new(), 0u64);
        for &n in batches {
            let batch: Vec<Arc<StoredEvent>> = (0..n)
                .map(|_| {
                    id += 1;
                    Arc::new(StoredEvent {
                        id,
                        name: name_of(id).into(),
                        json: format!("{{\"id\":{id}}}"),
                    })
                })
                .collect();
            all.extend(batch.iter().map(|e| (**e).clone()));
            mem.0.extend(pack(&batch));
        }
        (mem, all)
    }

    fn mixed(id: u64) -> &'static str {
        match id % 7 {
            0 => "log",
            3 => "epoch_end",
            _ => "batch_end",
        }
    }

    #[test]
    fn a_packed_batch_unpacks_to_its_events_with_their_ids() {
        let (mem, all) = store(&[300], mixed);
        assert_eq!(mem.0.len(), 3);
        let mut out = Vec::new();
        for c in &mem.0 {
            unpack(c, |_| true, &mut out).unwrap();
        }
        out.sort_by_key(|e| e.id);
        assert_eq!(out, all);
        let big = pack(&[Arc::new(StoredEvent {
            id: 1 << 40,
            name: "x".into(),
            json: "{}".into(),
        })]);
        let mut one = Vec::new();
        unpack(&big[0], |_| true, &mut one).unwrap();
        assert_eq!(one[0].id, 1 << 40);
    }

    #[test]
    fn pages_forwards_and_backwards_match_a_plain_scan_for_every_shape() {
        let (mut mem, all) = store(&[5, 1, 40, 17, 3, 64, 1, 100, 9], mixed);
        let n = all.len() as u64;
        let filters: [Option<Vec<String>>; 4] = [
            None,
            Some(vec!["log".into()]),
            Some(vec!["log".into(), "epoch_end".into(), "log".into()]),
            Some(vec!["nothing".into()]),
        ];
        for names in &filters {
            let wanted = |e: &&StoredEvent| {
                names
                    .as_ref()
                    .is_none_or(|n| n.iter().any(|x| *x == *e.name))
            };
            for limit in [0, 1, 2, 7, 33, 500] {
                for edge in [0, 1, 5, 6, 45, 46, 100, n, n + 1, n + 5] {
                    let got = read_after(&mut mem, "r", edge, limit, names.as_deref()).unwrap();
                    let want: Vec<StoredEvent> = all
                        .iter()
                        .filter(|e| e.id > edge)
                        .filter(wanted)
                        .take(limit)
                        .cloned()
                        .collect();
                    assert_eq!(got, want, "after {edge} limit {limit} {names:?}");
                    let got = read_before(&mut mem, "r", edge, limit, names.as_deref()).unwrap();
                    let want: Vec<StoredEvent> = all
                        .iter()
                        .rev()
                        .filter(|e| e.id < edge)
                        .filter(wanted)
                        .take(limit)
                        .cloned()
                        .collect();
                    assert_eq!(got, want, "before {edge} limit {limit} {names:?}");
                }
            }
        }
    }

    #[test]
    fn reading_stops_after_the_chunks_it_needs() {
        // 100 batches of 1,000 (300 chunks): a page from the middle, or the newest logs,
        // fetches a few chunks, not the run.
        struct Counting(Mem, usize);
        impl ChunkDb for Counting {
            fn chunks_after(
                &mut self,
                r: &str,
                n: Option<&str>,
                a: u64,
                rows: usize,
            ) -> Result<Vec<ChunkRow>, StoreError> {
                let got = self.0.chunks_after(r, n, a, rows)?;
                self.1 += got.len();
                Ok(got)
            }
            fn chunks_before(
                &mut self,
                r: &str,
                n: Option<&str>,
                b: u64,
                below: u64,
                rows: usize,
            ) -> Result<Vec<ChunkRow>, StoreError> {
                let got = self.0.chunks_before(r, n, b, below, rows)?;
                self.1 += got.len();
                Ok(got)
            }
        }
        let (mem, _) = store(&[1000; 100], mixed);
        let mut db = Counting(mem, 0);
        let got = read_after(&mut db, "r", 50_500, 10, None).unwrap();
        assert_eq!(got.first().map(|e| e.id), Some(50_501));
        assert!(db.1 <= 6, "{} chunks fetched", db.1);
        db.1 = 0;
        let got = read_before(&mut db, "r", u64::MAX, 5, Some(&["log".into()])).unwrap();
        assert_eq!(got.first().map(|e| e.id), Some(99_995));
        assert!(db.1 <= 2, "{} chunks fetched", db.1);
    }

    #[test]
    fn a_damaged_chunk_is_reported_not_misread() {
        let (mem, _) = store(&[10], |_| "batch_end");
        let mut bad = mem.0[0].clone();
        bad.data.truncate(bad.data.len() / 2);
        let err = unpack(&bad, |_| true, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("does not decode"), "{err}");
        let mut bad = mem.0[0].clone();
        bad.ids = vec![0xff; 12];
        assert!(unpack(&bad, |_| true, &mut Vec::new()).is_err());
    }
}
