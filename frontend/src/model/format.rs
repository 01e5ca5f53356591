//! How the dashboard shows a run's numbers and names: the status as shown (stale when a
//! live run went silent), elapsed time, counts, durations, bytes, file names, and the
//! case folding used to search and sort names. Pure functions, testable natively.

use stepwatch_events::{Progress, RunStatus};

/// Seconds without an event after which a running run shows as stale.
pub const STALE_AFTER_S: f64 = 60.0;

/// A decimal number as typed (`-1.5`, `3e-4`, `.5`), or `None`: a sign, digits with
/// at most one point, an optional exponent; no spaces, `inf`, `NaN` or hex. In the
/// browser the text, once checked, is converted by JavaScript's `parseFloat`: the
/// standard library's parser would bring 10 KB of tables to the download.
pub fn parse_f64(s: &str) -> Option<f64> {
    if !is_decimal(s.as_bytes()) {
        return None;
    }
    #[cfg(target_arch = "wasm32")]
    return Some(js_sys::Number::parse_float(s));
    #[cfg(not(target_arch = "wasm32"))]
    return s.parse().ok();
}

fn is_decimal(b: &[u8]) -> bool {
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let (mut digits, mut point) = (0, false);
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => digits += 1,
            b'.' if !point => point = true,
            _ => break,
        }
        i += 1;
    }
    if digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        i += usize::from(matches!(b.get(i), Some(b'+' | b'-')));
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

/// Lower case for searching and sorting names: ASCII, Latin-1, Greek and Cyrillic
/// capitals (scripts without case, Chinese among them, pass unchanged). Small on
/// purpose: the standard library's full Unicode tables cost kilobytes of download.
pub fn fold_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            let shift = match c {
                'A'..='Z' | 'À'..='Þ' | 'Α'..='Ω' | 'А'..='Я' if c != '×' && c != '\u{3a2}' => {
                    32
                }
                'Ѐ'..='Џ' => 80,
                _ => 0,
            };
            char::from_u32(c as u32 + shift).unwrap_or(c)
        })
        .collect()
}

/// A status as shown: the reducer's status, or stale when a live run went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownStatus {
    Run(RunStatus),
    Stale,
}

impl ShownStatus {
    /// The CSS class and test hook name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShownStatus::Run(s) => s.as_str(),
            ShownStatus::Stale => "stale",
        }
    }
}

/// Stale when running (or pending) and silent for [`STALE_AFTER_S`].
pub fn shown_status(status: RunStatus, last_event_at: Option<f64>, now: f64) -> ShownStatus {
    match (status, last_event_at) {
        (RunStatus::Running | RunStatus::Pending, Some(t)) if now - t > STALE_AFTER_S => {
            ShownStatus::Stale
        }
        (s, _) => ShownStatus::Run(s),
    }
}

/// Seconds a run has taken: up to now while it is live, else up to its end or, for a
/// run that went stale, its last event (a dead trainer's run does not keep counting).
pub fn elapsed_s(
    status: RunStatus,
    started_at: Option<f64>,
    ended_at: Option<f64>,
    last_event_at: Option<f64>,
    now: f64,
) -> Option<f64> {
    let live = status.is_live() && shown_status(status, last_event_at, now) != ShownStatus::Stale;
    let stop = if live {
        now
    } else {
        ended_at.or(last_event_at).unwrap_or(now)
    };
    started_at.map(|t| stop - t)
}

/// "3/10", "3" when the total is unknown, "–" (or "–/10") when there is no count.
pub fn progress(current: Option<u64>, total: Option<u64>) -> String {
    let c = current.map_or("–".to_string(), |c| c.to_string());
    match total {
        Some(t) => format!("{c}/{t}"),
        None => c,
    }
}

/// A run that ended before its end (stopped or failed): its bar says so.
pub fn cut_short(status: RunStatus, p: &Progress) -> bool {
    matches!(status, RunStatus::Stopped | RunStatus::Failed) && p.fraction.is_some_and(|f| f < 1.0)
}

/// "1h 02m", "3m 05s", "42s".
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "–".into();
    }
    let s = seconds as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Human-readable bytes: "2.5 GB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1000.0 && u < UNITS.len() - 1 {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

/// The file name of a path.
pub fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_stops_at_the_end_or_at_the_last_event_of_a_stale_run() {
        let (start, last) = (1000.0, 1060.0);
        // Live: up to now.
        assert_eq!(
            elapsed_s(
                RunStatus::Running,
                Some(start),
                None,
                Some(last),
                last + 5.0
            ),
            Some(65.0)
        );
        // Silent for longer than the stale limit: up to its last event.
        let later = last + STALE_AFTER_S + 3600.0;
        assert_eq!(
            elapsed_s(RunStatus::Running, Some(start), None, Some(last), later),
            Some(60.0)
        );
        // Ended: up to its end.
        assert_eq!(
            elapsed_s(
                RunStatus::Completed,
                Some(start),
                Some(1050.0),
                Some(last),
                later
            ),
            Some(50.0)
        );
        assert_eq!(elapsed_s(RunStatus::Running, None, None, None, later), None);
    }

    #[test]
    fn parse_f64_takes_decimals_and_nothing_else() {
        for (text, want) in [
            ("1.5", 1.5),
            ("-2", -2.0),
            ("+.5", 0.5),
            ("3e-4", 3e-4),
            ("1E+3", 1000.0),
            ("7.", 7.0),
        ] {
            assert_eq!(parse_f64(text), Some(want), "{text}");
        }
        for bad in [
            "", "-", ".", "1.2.3", "1e", "1e+", " 1", "1 ", "inf", "NaN", "0x10", "1,5", "e5",
        ] {
            assert_eq!(parse_f64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fold_case_lowers_the_scripts_with_case_and_leaves_the_rest() {
        assert_eq!(
            fold_case("ResNet-50 ÜBER Ωmega ЖУК Ёлка ×2 训练"),
            "resnet-50 über ωmega жук ёлка ×2 训练"
        );
        // Agrees with the standard library wherever it claims to.
        let sample = "AZÀÞΑΩАЯЀЏ azàþαωаяѐџ";
        assert_eq!(fold_case(sample), sample.to_lowercase());
    }

    #[test]
    fn stale_only_when_live_and_silent() {
        assert_eq!(
            shown_status(RunStatus::Running, Some(0.0), 61.0),
            ShownStatus::Stale
        );
        assert_eq!(
            shown_status(RunStatus::Running, Some(0.0), 10.0),
            ShownStatus::Run(RunStatus::Running)
        );
        assert_eq!(
            shown_status(RunStatus::Completed, Some(0.0), 1e9),
            ShownStatus::Run(RunStatus::Completed)
        );
    }

    #[test]
    fn a_stopped_run_short_of_its_end_is_cut_short() {
        let p = Progress {
            fraction: Some(0.7),
            ..Default::default()
        };
        assert!(cut_short(RunStatus::Stopped, &p));
        assert!(cut_short(RunStatus::Failed, &p));
        assert!(!cut_short(RunStatus::Running, &p));
        let full = Progress {
            fraction: Some(1.0),
            ..p
        };
        assert!(!cut_short(RunStatus::Stopped, &full));
    }

    #[test]
    fn formats() {
        assert_eq!(progress(Some(3), Some(10)), "3/10");
        assert_eq!(progress(Some(3), None), "3");
        assert_eq!(progress(None, None), "–");
        assert_eq!(progress(None, Some(3)), "–/3");
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(duration(65.0), "1m 05s");
        assert_eq!(bytes(2_500_000_000), "2.5 GB");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(file_name("./ckpt/epoch3_step1500.pt"), "epoch3_step1500.pt");
    }
}
