//! Time as the backends store it: Unix milliseconds, and durations in milliseconds. One place
//! for the conversions (and their saturation) of every backend.

use std::time::Duration;

use time::OffsetDateTime;

/// `at` in Unix milliseconds (saturating far outside the years any inbox sees).
#[cfg_attr(
    not(any(feature = "sqlite", feature = "redis", feature = "memory")),
    allow(dead_code)
)] // PostgreSQL keeps timestamptz
pub(crate) fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The instant `ms` Unix milliseconds name; the epoch for a value out of `time`'s range.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "redis", feature = "memory")),
    allow(dead_code)
)] // PostgreSQL keeps timestamptz
pub(crate) fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `d` in milliseconds, saturating at a quarter of `i64::MAX` (so that adding it to a Unix
/// time in milliseconds cannot overflow).
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_milliseconds_round_trip() {
        let at = OffsetDateTime::from_unix_timestamp(1_764_000_000).expect("time")
            + Duration::from_millis(123);
        assert_eq!(unix_ms(at), 1_764_000_000_123);
        assert_eq!(from_unix_ms(unix_ms(at)), at);
    }

    #[test]
    fn out_of_range_values_saturate_instead_of_panicking() {
        assert_eq!(from_unix_ms(i64::MAX), OffsetDateTime::UNIX_EPOCH);
        assert_eq!(duration_ms(Duration::MAX), i64::MAX / 4);
        assert_eq!(duration_ms(Duration::from_secs(2)), 2_000);
    }
}
