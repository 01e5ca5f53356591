//! Wall-clock time as the relay records it: Unix seconds, as `f64` like the wire's `ts`.

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
