//! The forms' tokens: stateless, so that any replica accepts a form another rendered. A token
//! is `EXPIRES.MAC`, the MAC an HMAC-SHA256 of the expiry and the session it was rendered for,
//! keyed by the console's form key (see [the console's docs](super#forms-across-replicas-csrf)).

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long a rendered form can be sent: 12 hours (then a reload gives a fresh one).
pub(super) const LIFETIME_MS: i128 = 12 * 3600 * 1000;

fn mac(key: &[u8], expires: i128, session: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(b"airmy-console-form-v1.");
    mac.update(expires.to_string().as_bytes());
    mac.update(b".");
    mac.update(session.as_bytes());
    mac
}

/// A token for forms rendered at `now_ms` for `session` (`""` without the built-in login).
pub(super) fn issue(key: &[u8], session: &str, now_ms: i128) -> String {
    let expires = now_ms + LIFETIME_MS;
    let tag = mac(key, expires, session).finalize().into_bytes();
    format!("{expires}.{}", hex::encode(tag))
}

/// Whether `token` was issued with `key` for `session` and is unexpired at `now_ms` (the MAC
/// compared in constant time).
pub(super) fn check(key: &[u8], session: &str, token: &str, now_ms: i128) -> bool {
    let Some((expires, tag)) = token.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(tag)) = (expires.parse::<i128>(), hex::decode(tag)) else {
        return false;
    };
    expires > now_ms
        && expires <= now_ms + LIFETIME_MS
        && mac(key, expires, session).verify_slice(&tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"a-console-secret-of-the-fleet";

    #[test]
    fn a_token_is_good_for_its_key_its_session_and_its_lifetime() {
        let token = issue(KEY, "o.1.n.mac", 1_000);
        assert!(check(KEY, "o.1.n.mac", &token, 1_000));
        assert!(check(KEY, "o.1.n.mac", &token, 1_000 + LIFETIME_MS - 1));
        assert!(
            !check(KEY, "o.1.n.mac", &token, 1_000 + LIFETIME_MS),
            "expired"
        );
        assert!(!check(KEY, "o.2.n.mac", &token, 1_000), "another session");
        assert!(!check(b"another-key-entirely", "o.1.n.mac", &token, 1_000));
        let (_, tag) = token.split_once('.').expect("two parts");
        let later = format!("{}.{tag}", 1_000 + 2 * LIFETIME_MS);
        assert!(!check(KEY, "o.1.n.mac", &later, 1_000), "expiry moved");
        for odd in [
            "",
            ".",
            "x.y",
            "1.",
            ".00",
            "99999999999999999999999999999999999999999.00",
        ] {
            assert!(!check(KEY, "", odd, 0), "{odd:?}");
        }
    }

    proptest! {
        #[test]
        fn no_other_text_passes(token in ".{0,80}", session in ".{0,10}") {
            prop_assert!(!check(KEY, &session, &token, 0) || token == issue(KEY, &session, 0));
        }
    }
}
