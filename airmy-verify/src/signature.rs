//! The `X-AIRMY-Signature` header: parsing it into 32 bytes, signing, and the standalone
//! [`verify`] / [`sign`] functions.
//!
//! The header carries the hex HMAC-SHA256 of the raw body. A value is accepted when, after
//! surrounding whitespace is trimmed, it is exactly 64 hex digits (either case). Anything else
//! (empty, 63 or 65 digits, a `sha256=` prefix, base64, non-ASCII bytes) and a header sent more
//! than once are [`Error::MalformedSignature`]; no header at all is [`Error::MissingSignature`].
//! The decoded bytes are compared with RustCrypto's constant-time `verify_slice`, never as hex
//! strings.
//!
//! # Example
//!
//! ```
//! use airmy_verify::{Error, MalformedReason, Secret, Verifier};
//!
//! let verifier = Verifier::new(Secret::new("whsec_example")?);
//! // An adapter hands over every value the request carried for the header:
//! assert!(verifier.intake([b"5D0a4b1c".repeat(8)], None).is_ok());
//!
//! let none: [&[u8]; 0] = [];
//! assert_eq!(verifier.intake(none, None).unwrap_err(), Error::MissingSignature);
//!
//! let prefixed = format!("sha256={}", "ab".repeat(32));
//! assert_eq!(
//!     verifier.intake([prefixed], None).unwrap_err(),
//!     Error::MalformedSignature(MalformedReason::WrongLength(71)),
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use hmac::Mac;

use crate::error::{Error, MalformedReason};
use crate::secret;

/// The name of the header AIRMY puts the signature in, lowercase as `http` header names are.
pub const SIGNATURE_HEADER: &str = "x-airmy-signature";

const HEX_LEN: usize = 64;

/// A well-formed signature: the 32 bytes of an HMAC-SHA256 tag.
///
/// It is only a claim until a [`Verifier`](crate::Verifier) checks it against a body. It is
/// internal to the crate and has no `PartialEq`: the only comparison is RustCrypto's
/// constant-time `verify_slice`. `Debug` shows the first two bytes only.
#[derive(Clone, Copy)]
pub(crate) struct Signature([u8; 32]);

impl Signature {
    /// Parses one header value given as raw bytes (HTTP header values need not be UTF-8).
    pub(crate) fn parse(value: &[u8]) -> Result<Self, Error> {
        let value = value.trim_ascii();
        let malformed = |reason| Err(Error::MalformedSignature(reason));
        if value.is_empty() {
            return malformed(MalformedReason::Empty);
        }
        if !value.is_ascii() {
            // Not a hex digit, whatever the length: counting its bytes or characters would
            // only confuse (a 65-byte value with one 2-byte character has 64 characters).
            return malformed(MalformedReason::NotHex);
        }
        if value.len() != HEX_LEN {
            return malformed(MalformedReason::WrongLength(value.len()));
        }
        decode_hex(value).map_or(malformed(MalformedReason::NotHex), |tag| Ok(Self(tag)))
    }

    /// Parses the header from every value the request carried for it, so the rule about
    /// repeated headers lives here and not in each adapter.
    pub(crate) fn from_header_values<I, V>(values: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut values = values.into_iter();
        let Some(first) = values.next() else {
            return Err(Error::MissingSignature);
        };
        let extra = values.count();
        if extra > 0 {
            return Err(Error::MalformedSignature(MalformedReason::Repeated(
                extra + 1,
            )));
        }
        Self::parse(first.as_ref())
    }

    /// The 32 raw bytes.
    pub(crate) const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Hex digit values, `INVALID` for every other byte.
static HEX_VALUES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
const INVALID: u8 = 0xFF;

/// Decodes exactly 64 hex digits of either case without branching on the digits: this runs on
/// every request, and a table lookup per digit is several times faster than a general decoder.
fn decode_hex(digits: &[u8]) -> Option<[u8; 32]> {
    let digits: &[u8; HEX_LEN] = digits.try_into().ok()?;
    let mut tag = [0u8; 32];
    let mut seen = 0u8;
    for (byte, pair) in tag.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_VALUES[usize::from(pair[0])],
            HEX_VALUES[usize::from(pair[1])],
        );
        seen |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0F);
    }
    (seen & 0xF0 == 0).then_some(tag)
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// The lowercase hex HMAC-SHA256 of `payload`, keyed by the UTF-8 bytes of `secret`: the value
/// AIRMY puts in `X-AIRMY-Signature`.
///
/// Like AIRMY's reference code this accepts any secret, even an empty one (which a
/// [`Secret`](crate::Secret) and [`verify`] refuse).
///
/// # Example
///
/// ```
/// let header = airmy_verify::sign(br#"{"id":"evt_1"}"#, "whsec_example");
/// assert_eq!(header.len(), 64);
/// assert!(airmy_verify::verify(br#"{"id":"evt_1"}"#, &header, "whsec_example"));
/// ```
#[must_use]
pub fn sign(payload: &[u8], secret: &str) -> String {
    let tag = secret::keyed(secret.as_bytes())
        .chain_update(payload)
        .finalize()
        .into_bytes();
    hex::encode(tag)
}

/// Whether `signature` (an `X-AIRMY-Signature` value) is the HMAC-SHA256 of `payload` keyed
/// by the UTF-8 bytes of `secret`, compared in constant time.
///
/// This is AIRMY's reference `verify` with the header leniency of this crate (surrounding
/// whitespace and upper-case hex are accepted). It answers `false` for a malformed signature
/// and for an empty secret, never panics, and checks neither freshness nor size: use a
/// [`Verifier`](crate::Verifier) for deliveries.
///
/// # Example
///
/// ```
/// let body = br#"{"id":"evt_01HXYZ","type":"test","created_at":"2026-03-22T14:30:00Z","data":{}}"#;
/// let header = airmy_verify::sign(body, "whsec_example");
/// assert!(airmy_verify::verify(body, &header, "whsec_example"));
/// assert!(airmy_verify::verify(body, &header.to_uppercase(), "whsec_example"));
/// assert!(!airmy_verify::verify(body, &header, "whsec_other"));
/// assert!(!airmy_verify::verify(b"tampered", &header, "whsec_example"));
/// ```
#[must_use]
pub fn verify(payload: &[u8], signature: &str, secret: &str) -> bool {
    let Ok(signature) = Signature::parse(signature.as_bytes()) else {
        return false;
    };
    if secret.is_empty() {
        return false;
    }
    secret::keyed(secret.as_bytes())
        .chain_update(payload)
        .verify_slice(&signature.0)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";

    fn reason(value: &[u8]) -> MalformedReason {
        match Signature::parse(value) {
            Err(Error::MalformedSignature(r)) => r,
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn accepts_64_hex_digits_in_either_case_with_whitespace() {
        let sig = Signature::parse(GOOD.as_bytes()).expect("valid");
        let padded = Signature::parse(format!(" \t{GOOD} ").as_bytes()).expect("valid");
        let lower = Signature::parse(GOOD.to_lowercase().as_bytes()).expect("valid");
        assert_eq!(padded.as_bytes(), sig.as_bytes());
        assert_eq!(lower.as_bytes(), sig.as_bytes());
        assert_eq!(hex::encode(sig.as_bytes()), GOOD.to_lowercase());
    }

    #[test]
    fn rejects_signature_of_wrong_length() {
        assert_eq!(
            reason(&GOOD.as_bytes()[..63]),
            MalformedReason::WrongLength(63)
        );
        assert_eq!(
            reason(format!("{GOOD}0").as_bytes()),
            MalformedReason::WrongLength(65)
        );
        assert_eq!(reason(b""), MalformedReason::Empty);
        assert_eq!(reason(b"   "), MalformedReason::Empty);
    }

    #[test]
    fn rejects_non_hex_prefixes_base64_and_non_ascii() {
        let mut not_hex = GOOD.to_owned();
        not_hex.replace_range(10..11, "g");
        assert_eq!(reason(not_hex.as_bytes()), MalformedReason::NotHex);
        assert_eq!(
            reason(format!("sha256={GOOD}").as_bytes()),
            MalformedReason::WrongLength(71)
        );
        // 32 bytes in base64 are 44 characters.
        assert_eq!(
            reason(b"ASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze8="),
            MalformedReason::WrongLength(44)
        );
        let mut non_ascii = GOOD.as_bytes()[..62].to_vec();
        non_ascii.extend_from_slice("é".as_bytes());
        assert_eq!(reason(&non_ascii), MalformedReason::NotHex);
        let mut latin1 = GOOD.as_bytes()[..63].to_vec();
        latin1.push(0xE9);
        assert_eq!(reason(&latin1), MalformedReason::NotHex);
        // 63 digits and a 2-byte character: 65 bytes, 64 characters, and not hex.
        let mut long = GOOD.as_bytes()[..63].to_vec();
        long.extend_from_slice("é".as_bytes());
        assert_eq!(reason(&long), MalformedReason::NotHex);
        assert_eq!(
            Error::MalformedSignature(reason(&long)).to_string(),
            "the X-AIRMY-Signature header is malformed: expected 64 hex digits, found another character"
        );
    }

    #[test]
    fn rejects_a_repeated_header_even_when_both_values_are_valid() {
        let values = [GOOD.as_bytes(), GOOD.as_bytes()];
        assert!(matches!(
            Signature::from_header_values(values),
            Err(Error::MalformedSignature(MalformedReason::Repeated(2)))
        ));
    }

    #[test]
    fn decodes_every_hex_digit_and_refuses_every_other_byte() {
        for b in 0..=255u8 {
            let mut digits = [b'0'; 64];
            digits[17] = b;
            let expected = (b as char).to_digit(16);
            match (decode_hex(&digits), expected) {
                (Some(tag), Some(v)) => assert_eq!(tag[8], v as u8, "{b:#x}"),
                (None, None) => {}
                (got, want) => panic!("byte {b:#x}: decoded {got:?}, expected {want:?}"),
            }
        }
        let all = "00112233445566778899aabbccddeeffAABBCCDDEEFF0123456789abcdefABCD";
        assert_eq!(
            decode_hex(all.as_bytes()).map(hex::encode),
            Some(all.to_lowercase())
        );
    }

    #[test]
    fn debug_shows_only_a_prefix() {
        let sig = Signature::parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(format!("{sig:?}"), "Signature(0123…)");
    }

    #[test]
    fn verify_refuses_an_empty_secret_even_for_its_own_signature() {
        let header = sign(b"body", "");
        assert!(!verify(b"body", &header, ""));
    }

    #[test]
    fn sign_is_lowercase_hex_of_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            sign(b"what do ya want for nothing?", "Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
