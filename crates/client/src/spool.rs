//! The on-disk spool: events the relay has not taken yet, in order, bounded in size.
//!
//! Same format and place as the Python SDK's (`<spool dir>/<run>/<time>-<src>.ndjson`,
//! one stamped event per line), so either SDK, or `python -m stepwatch sync`, sends
//! what the other left. Lines are appended whole; a line torn by a crash is skipped on
//! reading. When the file would pass its cap it is rewritten without the oldest
//! `batch_end` events first, then other routine events; run start/end, checkpoints,
//! errors and command answers are never dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use stepwatch_events::Event;

/// Default cap of one sender's spool file.
pub const DEFAULT_MAX_BYTES: u64 = 128 * 1024 * 1024;
/// After a compaction the file holds at most this share of the cap.
const COMPACT_TO: f64 = 0.75;
/// Events never dropped to keep a spool under its cap.
pub const PROTECTED: &[&str] = &[
    "training_start",
    "training_end",
    "checkpoint_saved",
    "checkpoint_loaded",
    "error_occurred",
    "command_ack",
    "alert",
    "alert_rule",
    "run_meta",
];

/// `STEPWATCH_SPOOL_DIR`, else `~/.cache/stepwatch/spool`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("STEPWATCH_SPOOL_DIR") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/stepwatch/spool"))
}

/// `STEPWATCH_SPOOL_MAX_BYTES` (bytes, or with a K/M/G suffix), else the default.
pub fn max_bytes_from_env() -> u64 {
    let Ok(raw) = std::env::var("STEPWATCH_SPOOL_MAX_BYTES") else {
        return DEFAULT_MAX_BYTES;
    };
    let raw = raw.trim().to_ascii_uppercase();
    let (num, scale) = match raw.chars().last() {
        Some('K') => (&raw[..raw.len() - 1], 1u64 << 10),
        Some('M') => (&raw[..raw.len() - 1], 1 << 20),
        Some('G') => (&raw[..raw.len() - 1], 1 << 30),
        _ => (raw.as_str(), 1),
    };
    num.parse::<f64>()
        .map(|n| ((n * scale as f64) as u64).max(1024))
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// A run's spool files, oldest first.
pub fn files(dir: &Path, run: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir.join(run))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One spool file, appended by the sender and read from an offset as it is sent.
pub struct Spool {
    pub path: PathBuf,
    max_bytes: u64,
    read_pos: u64,
    size: u64,
    /// Events dropped to stay under the cap, and how many of them were `batch_end`.
    pub dropped: u64,
    pub dropped_batch_end: u64,
}

impl Spool {
    pub fn new(path: PathBuf, max_bytes: u64) -> Spool {
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Spool {
            path,
            max_bytes,
            read_pos: 0,
            size,
            dropped: 0,
            dropped_batch_end: 0,
        }
    }

    /// An earlier process's file, sent as it is.
    pub fn existing(path: PathBuf) -> Spool {
        Spool::new(path, u64::MAX)
    }

    pub fn pending(&self) -> bool {
        self.size > self.read_pos
    }

    /// Appends events (already stamped with src/seq), compacting first when the cap
    /// would be passed.
    pub fn append(&mut self, events: &[Event]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let lines: Vec<Vec<u8>> = events
            .iter()
            .map(|e| {
                let mut l = e.to_json().into_bytes();
                l.push(b'\n');
                l
            })
            .collect();
        let incoming: u64 = lines.iter().map(|l| l.len() as u64).sum();
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        if self.size - self.read_pos + incoming > self.max_bytes {
            let mut all = self.remaining()?;
            all.extend(lines);
            return self.compact(all);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        for l in &lines {
            f.write_all(l)?;
        }
        self.size += incoming;
        Ok(())
    }

    /// Up to `max` events from the read offset, and the offset after them. Torn or
    /// invalid lines are skipped.
    pub fn read(&self, max: usize) -> (Vec<Event>, u64) {
        let mut out = Vec::new();
        let mut pos = self.read_pos;
        let Ok(mut f) = File::open(&self.path) else {
            return (out, self.size);
        };
        if f.seek(SeekFrom::Start(pos)).is_err() {
            return (out, self.size);
        }
        let mut reader = BufReader::new(f);
        let mut line = Vec::new();
        while out.len() < max {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pos += n as u64;
                    if line.last() != Some(&b'\n') {
                        break; // torn by a crash mid-write
                    }
                    if let Ok(e) = std::str::from_utf8(&line)
                        .map_err(|_| ())
                        .and_then(|s| Event::from_json(s).map_err(|_| ()))
                    {
                        out.push(e);
                    }
                }
            }
        }
        (out, pos)
    }

    /// Everything before `pos` was taken by the relay.
    pub fn advance(&mut self, pos: u64) {
        self.read_pos = self.read_pos.max(pos);
        if self.read_pos >= self.size {
            let _ = fs::remove_file(&self.path);
            self.read_pos = 0;
            self.size = 0;
        }
    }

    /// At exit: drops the part already sent (or the file when all of it was).
    pub fn settle(&mut self) {
        if self.read_pos >= self.size {
            self.advance(self.size);
        } else if self.read_pos > 0 {
            if let Ok(rest) = self.remaining() {
                let _ = self.rewrite(&rest);
            }
        }
    }

    fn remaining(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(self.read_pos))?;
        let mut reader = BufReader::new(f);
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(out);
            }
            if line.last() == Some(&b'\n') {
                out.push(line);
            }
        }
    }

    fn rewrite(&mut self, lines: &[Vec<u8>]) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            for l in lines {
                f.write_all(l)?;
            }
        }
        fs::rename(&tmp, &self.path)?;
        self.size = lines.iter().map(|l| l.len() as u64).sum();
        self.read_pos = 0;
        Ok(())
    }

    fn compact(&mut self, lines: Vec<Vec<u8>>) -> io::Result<()> {
        let total: u64 = lines.iter().map(|l| l.len() as u64).sum();
        let mut need = total as i64 - (self.max_bytes as f64 * COMPACT_TO) as i64;
        let names: Vec<String> = lines.iter().map(|l| event_name(l)).collect();
        let mut drop = vec![false; lines.len()];
        for batch_end_pass in [true, false] {
            for (i, name) in names.iter().enumerate() {
                if need <= 0 {
                    break;
                }
                if drop[i] || PROTECTED.contains(&name.as_str()) {
                    continue;
                }
                if (name == "batch_end") != batch_end_pass {
                    continue;
                }
                drop[i] = true;
                need -= lines[i].len() as i64;
                self.dropped += 1;
                self.dropped_batch_end += u64::from(name == "batch_end");
            }
        }
        let kept: Vec<Vec<u8>> = lines
            .into_iter()
            .zip(drop)
            .filter_map(|(l, d)| (!d).then_some(l))
            .collect();
        self.rewrite(&kept)
    }
}

fn event_name(line: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use stepwatch_events::event::{BatchEnd, TrainingStart};
    use stepwatch_events::EventBody;

    fn batch_end(i: u64) -> Event {
        let mut e = Event::new(EventBody::BatchEnd(BatchEnd {
            batch_idx: Some(i),
            loss: Some(1.0),
            ..Default::default()
        }));
        e.seq = Some(i + 1);
        e
    }

    #[test]
    fn a_full_spool_drops_the_oldest_batch_ends_and_keeps_the_start() {
        let dir = std::env::temp_dir().join(format!("sw-spool-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = Spool::new(dir.join("run/a.ndjson"), 4096);
        s.append(&[Event::new(EventBody::TrainingStart(
            TrainingStart::default(),
        ))])
        .unwrap();
        for chunk in (0..400).collect::<Vec<u64>>().chunks(10) {
            let batch: Vec<Event> = chunk.iter().map(|i| batch_end(*i)).collect();
            s.append(&batch).unwrap();
            assert!(fs::metadata(&s.path).unwrap().len() <= 4096, "cap passed");
        }
        assert!(s.dropped > 0 && s.dropped == s.dropped_batch_end);
        let (events, end) = s.read(10_000);
        assert_eq!(events[0].name(), "training_start");
        let idx: Vec<u64> = events[1..]
            .iter()
            .map(|e| match &e.body {
                EventBody::BatchEnd(b) => b.batch_idx.unwrap(),
                _ => panic!("unexpected event"),
            })
            .collect();
        let first = 400 - idx.len() as u64;
        assert_eq!(
            idx,
            (first..400).collect::<Vec<_>>(),
            "not the oldest dropped"
        );
        assert_eq!(idx.len() as u64 + s.dropped, 400);
        s.advance(end);
        assert!(!s.path.exists(), "a fully sent spool is removed");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_line_torn_by_a_crash_is_skipped() {
        let dir = std::env::temp_dir().join(format!("sw-spool-torn-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = Spool::new(dir.join("run/a.ndjson"), DEFAULT_MAX_BYTES);
        s.append(&[batch_end(0), batch_end(1)]).unwrap();
        let mut f = OpenOptions::new().append(true).open(&s.path).unwrap();
        f.write_all(b"{\"event\":\"batch_end\",\"batch_i").unwrap();
        let s = Spool::existing(s.path.clone());
        let (events, end) = s.read(100);
        assert_eq!(events.len(), 2);
        assert_eq!(end, fs::metadata(&s.path).unwrap().len());
        let _ = fs::remove_dir_all(&dir);
    }
}
