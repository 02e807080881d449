//! The webhook signing secret, keyed once for HMAC-SHA256.
//!
//! AIRMY signs with the UTF-8 bytes of the secret string exactly as configured, `whsec_` prefix
//! included: there is no prefix stripping and no base64 decoding (the reference code on AIRMY's
//! webhook page does `hmac.new(secret.encode(), …)`). A [`Secret`] keys an `Hmac<Sha256>` once;
//! every verification clones that keyed state, so the key schedule is not repeated per request.
//!
//! `Debug` prints `[redacted]`. The raw key bytes are never stored: the secret is kept only as
//! the keyed HMAC state (the SHA-256 states after absorbing the key XOR ipad / opad), which is
//! zeroed when dropped (the `zeroize` features of `hmac` and `sha2`). A secret built from an
//! owned `String` zeroes that string once it is keyed.
//!
//! # Example
//!
//! ```
//! use airmy_verify::Secret;
//!
//! let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! assert_eq!(format!("{secret:?}"), "Secret([redacted])");
//! assert!(Secret::new("").is_err());
//! # Ok::<(), airmy_verify::InvalidSecret>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use hmac::{Hmac, KeyInit};
use sha2::Sha256;
use zeroize::Zeroize;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// A signing secret, ready to verify or sign.
///
/// See the [module docs](self).
#[derive(Clone)]
pub struct Secret {
    keyed: HmacSha256,
}

impl Secret {
    /// Builds a secret from the signing secret string as configured in AIRMY.
    ///
    /// Pass an owned `String` to have it zeroed once it is keyed.
    ///
    /// # Errors
    ///
    /// [`InvalidSecret`] if the string is empty: an empty key would make every signature
    /// forgeable by anyone, so it is refused here rather than at request time.
    pub fn new<'a>(secret: impl Into<SecretString<'a>>) -> Result<Self, InvalidSecret> {
        let secret = secret.into();
        let bytes = secret.as_bytes();
        if bytes.is_empty() {
            return Err(InvalidSecret::Empty);
        }
        Ok(Self {
            keyed: keyed(bytes),
        })
    }

    /// A fresh HMAC state keyed with this secret, ready for `update`.
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }
}

/// HMAC-SHA256 keyed with `key`; any length of key is valid for HMAC.
pub(crate) fn keyed(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of every length (long keys are hashed, short ones padded).
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A secret string on its way into [`Secret::new`]: borrowed, or owned and zeroed on drop.
///
/// You do not name this type; it is what lets `Secret::new` take `&str`, `&String` and
/// `String`.
pub struct SecretString<'a>(Cow<'a, str>);

impl SecretString<'_> {
    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl<'a> From<&'a str> for SecretString<'a> {
    fn from(s: &'a str) -> Self {
        Self(Cow::Borrowed(s))
    }
}

impl<'a> From<&'a String> for SecretString<'a> {
    fn from(s: &'a String) -> Self {
        Self(Cow::Borrowed(s))
    }
}

impl From<String> for SecretString<'static> {
    fn from(s: String) -> Self {
        Self(Cow::Owned(s))
    }
}

impl Drop for SecretString<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(s) = &mut self.0 {
            s.zeroize();
        }
    }
}

impl fmt::Debug for SecretString<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

/// A secret that cannot be used, refused when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidSecret {
    /// The secret string is empty.
    Empty,
}

impl fmt::Display for InvalidSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the webhook signing secret is empty"),
        }
    }
}

impl std::error::Error for InvalidSecret {}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;

    #[test]
    fn rejects_an_empty_secret() {
        assert_eq!(Secret::new("").unwrap_err(), InvalidSecret::Empty);
        assert_eq!(
            Secret::new(String::new()).unwrap_err(),
            InvalidSecret::Empty
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("whsec_do_not_print_me").expect("valid");
        let shown = format!(
            "{secret:?} {:?}",
            SecretString::from("whsec_do_not_print_me")
        );
        assert!(!shown.contains("do_not_print_me"), "{shown}");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
    }

    #[test]
    fn keys_with_the_whole_string_including_the_prefix() {
        let with_prefix = Secret::new("whsec_abc").expect("valid");
        let without = Secret::new("abc").expect("valid");
        let tag = |s: &Secret| s.mac().chain_update(b"body").finalize().into_bytes();
        assert_ne!(tag(&with_prefix), tag(&without));
        assert_eq!(
            tag(&with_prefix),
            keyed(b"whsec_abc")
                .chain_update(b"body")
                .finalize()
                .into_bytes()
        );
    }

    #[test]
    fn accepts_owned_borrowed_and_non_ascii_secrets() {
        let owned = String::from("sëcret-ключ-🔑");
        assert!(Secret::new(&owned).is_ok());
        assert!(Secret::new(owned.as_str()).is_ok());
        assert!(Secret::new(owned).is_ok());
    }
}
