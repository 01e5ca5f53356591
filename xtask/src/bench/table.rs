//! The figures table: one row per figure, next to its target, and percentiles.

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn row(what: &str, figure: String, target: &str) {
    println!("| {what:<44} | {figure:>26} | {target:<34} |");
}

/// The table's heading: its first column named `title`, its third `compare`.
pub fn header(title: &str, compare: &str) {
    println!("\n| {title:<44} | {:>26} | {compare:<34} |", "measured");
    println!("|{}|{}|{}|", "-".repeat(46), "-".repeat(28), "-".repeat(36));
}
