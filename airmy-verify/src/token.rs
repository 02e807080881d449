//! Random tokens, made one way for the whole suite: the lease tokens of idempotency claims and
//! of inbox entries, the inbox's worker names, the event ids of
//! `airmy-webhook send`. A store or queue of your own can take its lease tokens here too.
//!
//! # Example
//!
//! ```
//! use airmy_verify::token::random_hex;
//!
//! let token = random_hex(16);
//! assert_eq!(token.len(), 32);
//! assert_ne!(token, random_hex(16));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// `bytes` random bytes from the operating system, as lowercase hex (`2 * bytes` characters).
///
/// Without an OS random source (`getrandom` fails only then), the bytes are made from a
/// process-wide counter, the time in nanoseconds and the process id: still distinct for every
/// call in this process and, in practice, from other processes' tokens, which is all a lease
/// token needs (it is compared, never trusted as a secret).
#[must_use]
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        fallback(&mut buf);
    }
    hex::encode(buf)
}

/// Fills `buf` with a counter, the time and the process id (the no-randomness fallback).
fn fallback(buf: &mut [u8]) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let seed = [
        n.to_le_bytes(),
        nanos.to_le_bytes(),
        u64::from(std::process::id()).to_le_bytes(),
    ];
    for (i, byte) in buf.iter_mut().enumerate() {
        // The counter first, so that even a short token differs from the previous one.
        *byte = seed[(i / 8) % 3][i % 8];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercase_hex_of_twice_the_length() {
        let token = random_hex(16);
        assert_eq!(token.len(), 32);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(random_hex(6).len(), 12);
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(random_hex(12), random_hex(12));
    }

    #[test]
    fn the_fallback_differs_from_call_to_call() {
        let (mut a, mut b) = ([0_u8; 6], [0_u8; 6]);
        fallback(&mut a);
        fallback(&mut b);
        assert_ne!(a, b);
    }
}
