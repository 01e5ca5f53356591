//! A file's version on disk (size, mtime, ctime, inode): what a brotli copy was made
//! from, the first line of its cache file, and the weak ETag of what is served.

use std::fs::Metadata;

/// The first line of every cache file; bump when [`prepare`] or the format changes.
const FORMAT: &str = "stepwatch-br 2";
/// What identifies one version of a file on disk. A rebuild that renames new files in
/// changes the inode; a rewrite in place changes the mtime and ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

impl Stamp {
    pub fn of(m: &Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
            Stamp {
                len: m.len(),
                mtime_ns: ns(m.mtime(), m.mtime_nsec()),
                ctime_ns: ns(m.ctime(), m.ctime_nsec()),
                ino: m.ino(),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Stamp {
                len: m.len(),
                mtime_ns,
                ctime_ns: 0,
                ino: 0,
            }
        }
    }

    pub fn header(&self) -> String {
        format!(
            "{FORMAT} {} {} {} {}\n",
            self.len, self.mtime_ns, self.ctime_ns, self.ino
        )
    }

    pub fn parse(line: &str) -> Option<Stamp> {
        let rest = line.strip_prefix(FORMAT)?.strip_prefix(' ')?;
        let mut it = rest.split_ascii_whitespace();
        let stamp = Stamp {
            len: it.next()?.parse().ok()?,
            mtime_ns: it.next()?.parse().ok()?,
            ctime_ns: it.next()?.parse().ok()?,
            ino: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(stamp)
    }

    /// Weak: the same validator for the brotli, gzip and plain bodies of one version.
    pub fn etag(&self) -> String {
        format!(
            "W/\"{:x}-{:x}-{:x}-{:x}\"",
            self.len, self.mtime_ns, self.ctime_ns, self.ino
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_the_cache_header() {
        let s = Stamp {
            len: 12,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -5,
            ino: 42,
        };
        assert_eq!(Stamp::parse(s.header().trim_end()), Some(s));
        assert_eq!(Stamp::parse("stepwatch-br 1 12 1 2 3"), None);
    }
}
