//! The CRI's timestamps: nanoseconds since the Unix epoch, as `i64`.

/// Now, in nanoseconds since the epoch; 0 if the clock is before 1970.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whole seconds of a nanosecond timestamp; 0 for one before the epoch.
pub fn secs(nanos: i64) -> u64 {
    u64::try_from(nanos / 1_000_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_nanoseconds_since_the_epoch() {
        let n = now_nanos();
        // After 2020-01-01 and before 2100-01-01.
        assert!(
            n > 1_577_836_800_000_000_000 && n < 4_102_444_800_000_000_000,
            "{n}"
        );
        assert_eq!(secs(1_500_000_000), 1);
        assert_eq!(secs(-5), 0);
    }
}
