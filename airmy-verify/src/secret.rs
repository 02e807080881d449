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

/// The secrets a [`Verifier`](crate::Verifier) accepts: the current one, then the previous
/// ones still accepted during a rotation. Replace a running verifier's secrets with
/// [`Verifier::set_secrets`](crate::Verifier::set_secrets); each secret is keyed once, here,
/// never on a request's path.
///
/// A secret file ([`Secrets::parse`], [`Secrets::read_file`]) holds one secret per line: the
/// first is the current one, the others are previous ones. Each line is trimmed of surrounding
/// whitespace (`\r` included); blank lines and lines that start with `#` are ignored (a `#`
/// further in a line is part of the secret).
///
/// # Example
///
/// ```
/// use airmy_verify::secret::Secrets;
///
/// let secrets = Secrets::parse("# rotated 2026-12-02\nwhsec_new\r\n\nwhsec_old # not a comment\n")?;
/// assert_eq!(secrets.len(), 2);
/// assert!(Secrets::parse("# nothing but comments\n\n").is_err());
/// # Ok::<(), airmy_verify::secret::SecretFileError>(())
/// ```
#[derive(Clone)]
pub struct Secrets {
    /// The current secret first.
    list: Vec<Secret>,
}

impl Secrets {
    /// Only `current`.
    #[must_use]
    pub fn new(current: Secret) -> Self {
        Self {
            list: vec![current],
        }
    }

    /// Also accepts `secret`, a previous one. Call it once per previous secret.
    #[must_use]
    pub fn previous(mut self, secret: Secret) -> Self {
        self.list.push(secret);
        self
    }

    /// The secrets of a secret file's text (see the [type docs](Self)).
    ///
    /// # Errors
    ///
    /// [`SecretFileError::Empty`] when no line holds a secret.
    pub fn parse(text: &str) -> Result<Self, SecretFileError> {
        // A byte-order mark is the editor's, not the secret's.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut list = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_matches(char::is_whitespace);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // An invisible character (another byte-order mark, a zero-width space, a control
            // character) would become part of a key nobody sees: refuse the file.
            if line.chars().any(invisible) {
                return Err(SecretFileError::Invisible { line: number + 1 });
            }
            if let Ok(secret) = Secret::new(line) {
                list.push(secret);
            }
        }
        if list.is_empty() {
            return Err(SecretFileError::Empty);
        }
        Ok(Self { list })
    }

    /// Reads and parses the secret file at `path`; the text read is zeroed once keyed.
    ///
    /// # Errors
    ///
    /// [`SecretFileError::Unreadable`] when the file cannot be read as UTF-8 text,
    /// [`SecretFileError::Empty`] when it holds no secret.
    pub fn read_file(path: impl AsRef<std::path::Path>) -> Result<Self, SecretFileError> {
        let path = path.as_ref();
        let mut bytes = read_secret_file(path)?;
        let parsed = Self::parse_file_bytes(&bytes, path);
        bytes.zeroize();
        parsed
    }

    /// [`Secrets::parse`] on the bytes of the secret file at `path` (as
    /// [`read_secret_file`] gives them, for a caller that also hashes them to see changes):
    /// refused unless they are UTF-8 text.
    ///
    /// # Errors
    ///
    /// As [`Secrets::parse`], and [`SecretFileError::Unreadable`] for bytes that are not UTF-8.
    pub fn parse_file_bytes(bytes: &[u8], path: &std::path::Path) -> Result<Self, SecretFileError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse(text),
            Err(_) => Err(SecretFileError::Unreadable {
                path: path.display().to_string(),
                reason: "it is not UTF-8 text".to_owned(),
            }),
        }
    }

    /// How many secrets: the current one and the previous ones.
    #[must_use]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Always `false`: there is a current secret.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The current secret and the previous ones, for [`Verifier::builder`](crate::Verifier::builder)
    /// and [`previous_secret`](crate::VerifierBuilder::previous_secret).
    #[must_use]
    pub fn into_parts(self) -> (Secret, Vec<Secret>) {
        let mut list = self.list.into_iter();
        match list.next() {
            Some(current) => (current, list.collect()),
            // Every constructor puts a current secret first.
            None => unreachable!("Secrets always hold a current secret"),
        }
    }

    pub(crate) fn into_list(self) -> Vec<Secret> {
        self.list
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("len", &self.list.len())
            .finish_non_exhaustive()
    }
}

/// The largest secret file read, 64 KiB: secrets are tens of bytes; a larger file is a
/// mistake (a path to a device or a log), refused rather than read without end.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The bytes of the secret file at `path`, at most [`MAX_SECRET_FILE_BYTES`]; zero them once
/// parsed ([`Secrets::parse`] on their text). [`Secrets::read_file`] is this and the parse.
///
/// # Errors
///
/// [`SecretFileError::Unreadable`] when the file cannot be read or is larger than the limit.
pub fn read_secret_file(path: &std::path::Path) -> Result<Vec<u8>, SecretFileError> {
    use std::io::Read;
    let unreadable = |reason: String| SecretFileError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|err| unreadable(err.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| unreadable(err.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        bytes.zeroize();
        return Err(unreadable(format!(
            "it is larger than {} KiB",
            MAX_SECRET_FILE_BYTES / 1024
        )));
    }
    Ok(bytes)
}

/// Characters a secret line may not hold: control characters and the invisible format
/// characters (byte-order mark, zero-width spaces and joiners, direction marks).
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// Why a secret file gave no secrets. Its `Display` names the file, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretFileError {
    /// The file could not be read (missing, no permission, not UTF-8).
    Unreadable {
        /// The file's path.
        path: String,
        /// What the operating system said.
        reason: String,
    },
    /// No line of the file holds a secret (only blank lines and `#` comments).
    Empty,
    /// A secret line holds an invisible or control character (a byte-order mark inside the
    /// file, a zero-width space, …): refused rather than keyed.
    Invisible {
        /// The line's number, from 1.
        line: usize,
    },
}

impl fmt::Display for SecretFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { path, reason } => {
                write!(f, "cannot read the secret file {path}: {reason}")
            }
            Self::Empty => {
                f.write_str("the secret file holds no secret (only blank lines and # comments)")
            }
            Self::Invisible { line } => write!(
                f,
                "line {line} of the secret file holds an invisible or control character (a \
                 byte-order mark, a zero-width space, ...): refused"
            ),
        }
    }
}

impl std::error::Error for SecretFileError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_that_is_not_utf8_is_refused_naming_the_file() {
        let path = std::path::Path::new("/run/secrets/airmy");
        let err = Secrets::parse_file_bytes(b"whsec_\xff\xfe\n", path).expect_err("not UTF-8");
        assert_eq!(
            err.to_string(),
            "cannot read the secret file /run/secrets/airmy: it is not UTF-8 text"
        );
        assert_eq!(
            Secrets::parse_file_bytes(b"whsec_ok\n", path)
                .expect("UTF-8")
                .len(),
            1
        );
    }

    #[test]
    fn byte_order_marks_and_invisible_characters_never_become_secrets() {
        // An "empty" file saved by an editor with a BOM is empty.
        assert_eq!(
            Secrets::parse("\u{feff}\r\n").expect_err("empty"),
            SecretFileError::Empty
        );
        // A leading BOM is dropped, before a secret or a comment.
        let tag = |s: &Secret| s.mac().chain_update(b"body").finalize().into_bytes();
        let secrets = Secrets::parse("\u{feff}whsec_new\r\nwhsec_old\r\n").expect("two");
        let list = secrets.into_list();
        assert_eq!(list.len(), 2);
        assert_eq!(
            tag(&list[0]),
            tag(&Secret::new("whsec_new").expect("valid"))
        );
        let secrets = Secrets::parse("\u{feff}# rotated 2026-12-02\nwhsec_e").expect("one");
        assert_eq!(secrets.len(), 1);
        // Anywhere else, an invisible character refuses the file.
        for bad in [
            "whsec_\u{200b}x",
            "\u{feff}\u{feff}whsec_x",
            "whsec_x\u{7}",
            "a\nwhsec_\u{202e}y",
        ] {
            assert!(
                matches!(Secrets::parse(bad), Err(SecretFileError::Invisible { .. })),
                "{bad:?}"
            );
        }
        let err = Secrets::parse("ok\nwhsec_\u{200b}secretvalue").expect_err("refused");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(!err.to_string().contains("secretvalue"), "{err}");
    }
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
    fn a_secret_file_is_current_first_trimmed_without_comments() {
        let tag = |s: &Secret| s.mac().chain_update(b"body").finalize().into_bytes();
        let secrets =
            Secrets::parse("\n# a comment\n  whsec_new \r\n\t\n#whsec_ignored\nwhsec_#old\r\n")
                .expect("two secrets");
        let list = secrets.into_list();
        assert_eq!(list.len(), 2);
        let want = |s: &str| tag(&Secret::new(s).expect("valid"));
        assert_eq!(tag(&list[0]), want("whsec_new"));
        assert_eq!(tag(&list[1]), want("whsec_#old"));
    }

    #[test]
    fn a_secret_file_without_a_secret_is_refused() {
        for text in ["", "\n\n", "# only\n  # comments\r\n", " \t \r\n"] {
            assert_eq!(
                Secrets::parse(text).expect_err(text),
                SecretFileError::Empty
            );
        }
        let err = Secrets::read_file("/dev/zero").expect_err("endless");
        assert!(err.to_string().contains("larger than 64 KiB"), "{err}");
        let err = Secrets::read_file("/nonexistent/airmy/secret").expect_err("missing");
        assert!(matches!(err, SecretFileError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/airmy/secret"));
    }

    #[test]
    fn secrets_debug_shows_only_the_count() {
        let secrets = Secrets::parse("whsec_hidden\nwhsec_also_hidden").expect("valid");
        let shown = format!("{secrets:?}");
        assert!(!shown.contains("hidden"), "{shown}");
        assert!(shown.contains("len: 2"), "{shown}");
    }

    #[test]
    fn accepts_owned_borrowed_and_non_ascii_secrets() {
        let owned = String::from("sëcret-ключ-🔑");
        assert!(Secret::new(&owned).is_ok());
        assert!(Secret::new(owned.as_str()).is_ok());
        assert!(Secret::new(owned).is_ok());
    }
}
