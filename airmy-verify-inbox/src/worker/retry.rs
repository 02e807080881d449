//! [`RetryPolicy`]: when a failed entry is tried again, and when it becomes a dead letter (a
//! pure function of the attempt, the times and one random draw for the jitter).

use std::time::Duration;

use time::OffsetDateTime;

/// When failed entries are tried again, and when they become dead letters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    initial: Duration,
    multiplier: f64,
    max_delay: Duration,
    max_age: Duration,
    max_attempts: Option<u32>,
    jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(600),
            max_age: Duration::from_secs(24 * 3600),
            max_attempts: None,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait before the second attempt. Defaults to 1 second.
    #[must_use]
    pub fn initial(mut self, wait: Duration) -> Self {
        self.initial = wait;
        self
    }

    /// Each wait is this many times the one before (at least 1). Defaults to 2.
    #[must_use]
    pub fn multiplier(mut self, factor: f64) -> Self {
        self.multiplier = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The longest wait. Defaults to 10 minutes.
    #[must_use]
    pub fn max_delay(mut self, wait: Duration) -> Self {
        self.max_delay = wait;
        self
    }

    /// No attempt later than this after the delivery was received: past it the entry is a dead
    /// letter. Defaults to 24 hours.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// At most this many attempts, if set. Defaults to none (the age decides).
    #[must_use]
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Each wait is moved at random by up to this fraction, either way (0 to 1). Defaults to
    /// 0.2.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// When to try an entry again after its `attempt`-th attempt failed at `now`, or `None` when
    /// it is past the policy (a dead letter).
    #[must_use]
    pub fn next_attempt(
        &self,
        attempt: u32,
        received_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        self.next_attempt_with(attempt, received_at, now, random_unit())
    }

    /// [`next_attempt`](Self::next_attempt) with the jitter's random draw given: `unit` in
    /// [0, 1) moves the wait by `jitter * (2 * unit - 1)` of itself (0.5: not at all). A pure
    /// function.
    pub(crate) fn next_attempt_with(
        &self,
        attempt: u32,
        received_at: OffsetDateTime,
        now: OffsetDateTime,
        unit: f64,
    ) -> Option<OffsetDateTime> {
        if self.max_attempts.is_some_and(|max| attempt >= max) {
            return None;
        }
        let exponent = i32::try_from(attempt.saturating_sub(1))
            .unwrap_or(i32::MAX)
            .min(64);
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let base = base.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * (2.0 * unit - 1.0);
        let delay =
            Duration::try_from_secs_f64((base * (1.0 + jitter)).max(0.0)).unwrap_or(self.max_delay);
        let at = now + delay;
        let deadline = received_at + self.max_age;
        (at <= deadline).then_some(at)
    }
}

/// A number in [0, 1) from the OS's randomness (a fixed 0.5 if there is none).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_764_000_000 + secs).expect("time")
    }

    /// The wait after `attempt` with no jitter (`unit` 0.5), in seconds.
    fn wait(policy: &RetryPolicy, attempt: u32) -> Option<f64> {
        policy
            .next_attempt_with(attempt, at(0), at(0), 0.5)
            .map(|next| (next - at(0)).as_seconds_f64())
    }

    #[test]
    fn first_retry_waits_the_initial_delay_then_doubles() {
        let policy = RetryPolicy::default();
        assert_eq!(wait(&policy, 1), Some(1.0));
        assert_eq!(wait(&policy, 2), Some(2.0));
        assert_eq!(wait(&policy, 3), Some(4.0));
        assert_eq!(wait(&policy, 4), Some(8.0));
    }

    #[test]
    fn the_delay_is_capped_at_max_delay() {
        let policy = RetryPolicy::default();
        assert_eq!(wait(&policy, 11), Some(600.0));
        assert_eq!(wait(&policy, 1_000), Some(600.0));
        assert_eq!(wait(&policy, u32::MAX), Some(600.0));
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let policy = RetryPolicy {
            max_attempts: Some(3),
            ..RetryPolicy::default()
        };
        assert!(wait(&policy, 2).is_some());
        assert_eq!(wait(&policy, 3), None);
        assert_eq!(wait(&policy, 4), None);
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_be_past_max_age() {
        let policy = RetryPolicy::default();
        let received = at(0);
        // 10 s before the 24 h deadline, a 600 s wait would end past it.
        let late = received + Duration::from_secs(24 * 3600 - 10);
        assert_eq!(policy.next_attempt_with(20, received, late, 0.5), None);
        // A 1 s wait still fits.
        assert!(policy.next_attempt_with(1, received, late, 0.5).is_some());
    }

    #[test]
    fn jitter_moves_the_wait_by_at_most_its_fraction_either_way() {
        let policy = RetryPolicy::default();
        let (now, received) = (at(100), at(0));
        let wait_with = |unit: f64| {
            (policy
                .next_attempt_with(4, received, now, unit)
                .expect("retry")
                - now)
                .as_seconds_f64()
        };
        assert!((wait_with(0.0) - 6.4).abs() < 1e-9, "{}", wait_with(0.0));
        assert!((wait_with(0.999_999_999) - 9.6).abs() < 1e-6);
        for unit in [0.1, 0.3, 0.7, 0.9] {
            let w = wait_with(unit);
            assert!((6.4..=9.6).contains(&w), "{w}");
        }
    }

    #[test]
    fn odd_settings_never_panic_nor_wait_negatively() {
        let policy = RetryPolicy {
            initial: Duration::ZERO,
            multiplier: 0.5,
            jitter: 7.0,
            ..RetryPolicy::default()
        };
        for unit in [0.0, 0.5, 0.999] {
            let next = policy
                .next_attempt_with(3, at(0), at(5), unit)
                .expect("retry");
            assert!(next >= at(5));
        }
    }

    #[test]
    fn random_units_are_in_the_unit_interval() {
        for _ in 0..1_000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }
}
