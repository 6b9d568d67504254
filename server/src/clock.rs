//! Wall-clock time as this node stamps it: milliseconds since the Unix epoch. The leader (or the
//! proposing node) stamps it into entries, so that apply, which has no clock, is deterministic.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
