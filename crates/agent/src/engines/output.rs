//! Reads what a job printed into the log files of its folder, a few complete lines at a
//! time, remembering how far each file was read (shared by the engines whose jobs run
//! under `stepwatch job-exec`: local and Slurm).
//!
//! A `.forwarding` marker in the folder says an agent already forwarded from it: an agent
//! that adopts the job after a restart starts at the files' ends, not from the top again.

use crate::engine::OutputLine;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

/// Most bytes read from one file per call.
const CHUNK: u64 = 1 << 20;

/// How far each job's log files have been read, by job key.
#[derive(Default)]
pub struct Tail {
    read: Mutex<BTreeMap<String, Vec<u64>>>,
}

impl Tail {
    pub fn new() -> Tail {
        Tail::default()
    }

    /// New complete lines (at most `max` in all) of `files` (`(file name, stream)`, read in
    /// that order) in the job folder `dir` of job `key`.
    pub fn read(
        &self,
        key: &str,
        dir: &Path,
        files: &[(&str, &'static str)],
        max: usize,
    ) -> Vec<OutputLine> {
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let at = read.entry(key.to_string()).or_insert_with(|| {
            let adopted = dir.join(".forwarding").exists();
            files
                .iter()
                .map(|(name, _)| {
                    if adopted {
                        std::fs::metadata(dir.join(name)).map_or(0, |m| m.len())
                    } else {
                        0
                    }
                })
                .collect()
        });
        at.resize(files.len(), 0);
        let mut out = Vec::new();
        for (i, (name, stream)) in files.iter().enumerate() {
            read_lines(&dir.join(name), stream, &mut at[i], max, &mut out);
        }
        let _ = std::fs::write(dir.join(".forwarding"), b"");
        out
    }
}

/// Appends the complete lines of `path` after byte `at` to `out` until it holds `max`.
fn read_lines(
    path: &Path,
    stream: &'static str,
    at: &mut u64,
    max: usize,
    out: &mut Vec<OutputLine>,
) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return;
    };
    if f.seek(SeekFrom::Start(*at)).is_err() {
        return;
    }
    let mut reader = std::io::BufReader::new(f.by_ref().take(CHUNK));
    let mut line = Vec::new();
    while out.len() < max {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(n) if line.ends_with(b"\n") => {
                *at += n as u64;
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                out.push(OutputLine { stream, text });
            }
            // A line still being written: wait for its end.
            Ok(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("stepwatch-tail-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const FILES: [(&str, &str); 2] = [("stdout.log", "stdout"), ("stderr.log", "stderr")];

    #[test]
    fn reads_complete_lines_once_and_in_order() {
        let d = dir("lines");
        std::fs::write(d.join("stdout.log"), "one\ntwo\npart").unwrap();
        std::fs::write(d.join("stderr.log"), "oops\n").unwrap();
        let tail = Tail::new();
        let got: Vec<(String, String)> = tail
            .read("k", &d, &FILES, 10)
            .into_iter()
            .map(|l| (l.stream.to_string(), l.text))
            .collect();
        assert_eq!(
            got,
            [("stdout", "one"), ("stdout", "two"), ("stderr", "oops")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(tail.read("k", &d, &FILES, 10).is_empty());
        std::fs::write(d.join("stdout.log"), "one\ntwo\npartial\n").unwrap();
        let next = tail.read("k", &d, &FILES, 10);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].text, "partial");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stops_at_max_and_an_adopter_starts_at_the_end() {
        let d = dir("max");
        std::fs::write(d.join("stdout.log"), "a\nb\nc\n").unwrap();
        let tail = Tail::new();
        assert_eq!(tail.read("k", &d, &FILES, 2).len(), 2);
        assert_eq!(tail.read("k", &d, &FILES, 2)[0].text, "c");
        // A new agent (a fresh Tail) finds the marker and skips what was forwarded.
        let adopter = Tail::new();
        assert!(adopter.read("k", &d, &FILES, 10).is_empty());
        std::fs::write(d.join("stdout.log"), "a\nb\nc\nd\n").unwrap();
        assert_eq!(adopter.read("k", &d, &FILES, 10)[0].text, "d");
        let _ = std::fs::remove_dir_all(&d);
    }
}
