//! How the suite writes text it does not control: an event id, a type or an error shown to a
//! person (in a console page or a table), an event id or type on a line of a program's output,
//! and a URL that may carry a password. One rule each, used by the web console, the example
//! receivers, the `airmy-webhook` tool and anything else that shows them.
//!
//! ```
//! use airmy_verify::text::{redact_url, visible, word};
//!
//! // A signed id can hold anything JSON allows, a newline included: it must not add a line.
//! assert_eq!(word("evt_1\nhandled evt_2 test"), r"evt_1\u{a}handled\u{20}evt_2\u{20}test");
//! assert_eq!(word(""), r#""""#);
//! // Nor disguise itself: a right-to-left override would show `evt_gpj.exe` as `evt_exe.jpg`.
//! assert_eq!(visible("evt_\u{202e}gpj.exe").to_string(), r"evt_\u{202e}gpj.exe");
//! assert_eq!(redact_url("redis://:hunter2@127.0.0.1:6379/0"), "redis://[redacted]@127.0.0.1:6379/0");
//! ```

use std::borrow::Cow;
use std::fmt;

/// The format characters (Unicode general category `Cf`), as inclusive ranges: the
/// bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069), the
/// zero-width space, joiners and marks (U+200B–U+200F), the byte order mark (U+FEFF), the soft
/// hyphen, the invisible operators, the tags, … (checked against the Unicode database in the
/// tests).
const FORMAT: [(char, char); 21] = [
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

/// Whether `c` can disguise the text it is in, so that it must never be shown as it is: a
/// control character (`Cc`: a newline, an escape sequence's `ESC`, C1 controls), a format
/// character (`Cf`: bidirectional overrides and isolates such as U+202E, which shows
/// `evt_gpj.exe` as `evt_exe.jpg`; zero-width characters such as U+200B, which make two ids
/// that look the same differ; the byte order mark), or a line or paragraph separator (U+2028,
/// U+2029).
#[must_use]
pub fn disguises(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || (c >= '\u{ad}'
            && FORMAT
                .binary_search_by(|&(first, last)| {
                    if last < c {
                        std::cmp::Ordering::Less
                    } else if first > c {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .is_ok())
}

/// `text` as it may be shown to a person: every character that [`disguises`] it is shown as
/// `\u{…}` (its code in hex), never applied; the rest as it is. The one rule for an id, a type or
/// an error in the web console's pages (which mark each escaped character, through
/// [`Visible::parts`]) and in `airmy-webhook inbox`'s tables ([`Visible`]'s `Display`).
///
/// ```
/// use airmy_verify::text::{Part, visible};
///
/// let id = "evt_\u{200b}1";
/// assert_eq!(visible(id).to_string(), r"evt_\u{200b}1");
/// let parts: Vec<Part<'_>> = visible(id).parts().collect();
/// assert_eq!(parts, [Part::Text("evt_"), Part::Escaped('\u{200b}'), Part::Text("1")]);
/// assert!(!visible("evt_1").escapes());
/// ```
#[must_use]
pub fn visible(text: &str) -> Visible<'_> {
    Visible(text)
}

/// A text to show, with what [`disguises`] it escaped: see [`visible`]. Its `Display` writes
/// each such character as `\u{…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible<'a>(&'a str);

/// A piece of a [`Visible`] text: a run shown as it is, or one character to show escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// Text without a character that [`disguises`] it.
    Text(&'a str),
    /// A character that would disguise the text; its `Display` is `\u{` its code in
    /// lowercase hex `}` (`\u{202e}`).
    Escaped(char),
}

impl fmt::Display for Part<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(run) => f.write_str(run),
            Self::Escaped(c) => write!(f, "\\u{{{:x}}}", u32::from(*c)),
        }
    }
}

impl<'a> Visible<'a> {
    /// Whether any character of the text is escaped.
    #[must_use]
    pub fn escapes(self) -> bool {
        self.0.chars().any(disguises)
    }

    /// The text's runs and escaped characters, in order.
    pub fn parts(self) -> impl Iterator<Item = Part<'a>> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let mut chars = rest.char_indices();
            let (_, first) = chars.next()?;
            if disguises(first) {
                rest = &rest[first.len_utf8()..];
                return Some(Part::Escaped(first));
            }
            let end = chars
                .find(|&(_, c)| disguises(c))
                .map_or(rest.len(), |(at, _)| at);
            let (run, after) = rest.split_at(end);
            rest = after;
            Some(Part::Text(run))
        })
    }
}

impl fmt::Display for Visible<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts().try_for_each(|part| part.fmt(f))
    }
}

/// `text` as one word of a line: whitespace, backslashes, double quotes and every character
/// that [`disguises`] a text (control and format characters: a newline, U+202E) written as
/// `\u{…}` (the character's code in hex), so that an event id or type can never break a line,
/// add one, split into two words or show as another; an empty text is `""` (which no escaped
/// word can be). Text without such characters is returned as it is, without a copy.
#[must_use]
pub fn word(text: &str) -> Cow<'_, str> {
    if text.is_empty() {
        return Cow::Borrowed("\"\"");
    }
    let escaped = |c: char| c.is_whitespace() || disguises(c) || c == '\\' || c == '"';
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            out.push_str(&Part::Escaped(c).to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `url` as it may be shown in a log line, an error or `Debug`: any `user:password@` part
/// between the scheme and the host is replaced by `[redacted]@`, and the value of a query
/// parameter that carries a credential (`password`, `sslpassword`, `pass`, `passwd`, or any
/// name holding `password`, `secret` or `token`: `?password=…` is a PostgreSQL URL's other way
/// to give one) by `[redacted]`. A text that is not a URL with credentials is returned
/// unchanged.
#[must_use]
pub fn redact_url(url: &str) -> String {
    // The user information first (up to the last `@`, whatever the password holds), then the
    // query of what follows it: its parameters are separated by `&` only (a `?` inside a value
    // is part of it), and a name is compared once percent-decoded (`pass%77ord` is `password`
    // to the driver).
    let (head, rest, query_before) = match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => (
            format!("{}[redacted]@", &url[..scheme_end + 3]),
            &url[at + 1..],
            url[..at].contains('?'),
        ),
        _ => (String::new(), url, false),
    };
    let mut shown = head;
    let query = match rest.split_once('?') {
        Some((path, query)) => {
            shown.push_str(path);
            shown.push('?');
            query
        }
        // The `@` that ended the user information was in the query: the rest is query too.
        None if query_before => rest,
        None => {
            shown.push_str(rest);
            return shown;
        }
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if is_credential(&percent_decoded(key)) && !value.is_empty() => {
                format!("{key}=[redacted]")
            }
            _ => pair.to_owned(),
        })
        .collect();
    shown.push_str(&pairs.join("&"));
    shown
}

/// `text` with its `%XX` escapes decoded (invalid ones kept as they are), `+` as a space.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a query parameter's name says it carries a credential.
fn is_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    matches!(key.as_str(), "pass" | "passwd" | "pwd")
        || ["password", "secret", "token"]
            .iter()
            .any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_words_are_borrowed() {
        assert!(matches!(word("evt_01HXYZ"), Cow::Borrowed("evt_01HXYZ")));
        assert_eq!(word("run.completed"), "run.completed");
    }

    #[test]
    fn disguises_is_every_control_format_and_separator_character() {
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        let mut wrong = Vec::new();
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            let expected = matches!(
                c.general_category(),
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            );
            if disguises(c) != expected {
                wrong.push(format!("U+{:04X}", u32::from(c)));
            }
        }
        assert!(wrong.is_empty(), "{wrong:?}");
        assert!(FORMAT.windows(2).all(|w| w[0].1 < w[1].0), "sorted, apart");
    }

    #[test]
    fn bidi_overrides_and_zero_width_characters_are_shown_escaped() {
        for (text, shown) in [
            ("evt_\u{202e}gpj.exe", r"evt_\u{202e}gpj.exe"),
            (
                "\u{202d}\u{2066}\u{2067}\u{2068}\u{2069}",
                r"\u{202d}\u{2066}\u{2067}\u{2068}\u{2069}",
            ),
            (
                "a\u{200b}\u{200c}\u{200d}\u{200e}\u{200f}b",
                r"a\u{200b}\u{200c}\u{200d}\u{200e}\u{200f}b",
            ),
            ("\u{feff}evt", r"\u{feff}evt"),
            ("x\u{1b}[31my\n", r"x\u{1b}[31my\u{a}"),
            ("tag\u{e0041}", r"tag\u{e0041}"),
            ("é ✓ עברית", "é ✓ עברית"),
            ("", ""),
        ] {
            assert_eq!(visible(text).to_string(), shown, "{text:?}");
            assert_eq!(visible(text).escapes(), text != shown, "{text:?}");
        }
        assert_eq!(
            visible("\u{202e}ab\u{200b}").parts().collect::<Vec<_>>(),
            [
                Part::Escaped('\u{202e}'),
                Part::Text("ab"),
                Part::Escaped('\u{200b}')
            ]
        );
        assert_eq!(word("evt_\u{202e}1"), r"evt_\u{202e}1");
    }

    #[test]
    fn separators_quotes_and_backslashes_are_escaped() {
        assert_eq!(word("a b"), r"a\u{20}b");
        assert_eq!(word("a\tb\r\n"), r"a\u{9}b\u{d}\u{a}");
        assert_eq!(word(r#"a"b\c"#), r"a\u{22}b\u{5c}c");
        assert_eq!(word("a\u{2028}b\u{85}"), r"a\u{2028}b\u{85}");
        assert_eq!(word("é✓"), "é✓");
    }

    #[test]
    fn credentials_in_the_query_are_redacted() {
        assert_eq!(
            redact_url("postgres://127.0.0.1:5432/app?user=postgres&password=hunter2"),
            "postgres://127.0.0.1:5432/app?user=postgres&password=[redacted]"
        );
        assert_eq!(
            redact_url("postgres://db/app?sslmode=require&sslpassword=k3y&PASSWORD=x"),
            "postgres://db/app?sslmode=require&sslpassword=[redacted]&PASSWORD=[redacted]"
        );
        // An `@` in the query: everything up to it is hidden, the password with it.
        let shown = redact_url("postgres://u:hunter2@db/app?user=a@b&password=hunter3");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert_eq!(redact_url("redis://h:6379/0?db=1"), "redis://h:6379/0?db=1");
        // A name percent-encoded, and a `?` inside a value, hide nothing.
        assert_eq!(
            redact_url("postgres://h/db?pass%77ord=leak&%70assword=leak4"),
            "postgres://h/db?pass%77ord=[redacted]&%70assword=[redacted]"
        );
        assert_eq!(
            redact_url("postgres://h/app?user=postgres&password=se?cret&schema=x"),
            "postgres://h/app?user=postgres&password=[redacted]&schema=x"
        );
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_url("rediss://user:p%40ss@redis.internal:6380/2"),
            "rediss://[redacted]@redis.internal:6380/2"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("sqlite:/var/lib/inbox@2.db"),
            "sqlite:/var/lib/inbox@2.db"
        );
    }

    proptest! {
        /// Whatever the text, the word is one non-empty word, and distinct texts give distinct
        /// words (escaping is reversible).
        #[test]
        fn any_text_is_one_word(text in ".*") {
            let w = word(&text);
            prop_assert!(!w.is_empty());
            prop_assert!(!w.chars().any(|c| c.is_whitespace() || c.is_control()));
            prop_assert_eq!(w.split_whitespace().count(), 1);
        }

        /// Whatever the text, what is shown holds no character that disguises it, the parts
        /// put back together are the text, and the escaped characters are exactly those.
        #[test]
        fn nothing_shown_disguises_the_text(text in "\\PC{0,12}|.{0,12}|[\u{200b}-\u{200f}\u{202a}-\u{202e}\u{2066}-\u{2069}a\\\\]{0,12}") {
            let shown = visible(&text).to_string();
            prop_assert!(!shown.chars().any(disguises), "{:?}", shown);
            let mut back = String::new();
            for part in visible(&text).parts() {
                match part {
                    Part::Text(run) => {
                        prop_assert!(!run.is_empty() && !run.chars().any(disguises));
                        back.push_str(run);
                    }
                    Part::Escaped(c) => {
                        prop_assert!(disguises(c));
                        back.push(c);
                    }
                }
            }
            prop_assert_eq!(back, text);
        }

        #[test]
        fn escaping_is_injective(a in ".{0,8}", b in ".{0,8}") {
            if a != b {
                prop_assert_ne!(word(&a), word(&b));
            }
        }

        #[test]
        // (A password starting with `[` would read as the `[redacted]` marker in the check.)
        fn no_query_password_survives(password in "[^&?@\\[]{1,12}", before in "[a-z=&]{0,8}") {
            let url = format!("postgres://db:5432/app?{before}&password={password}&sslmode=require");
            let shown = redact_url(&url);
            prop_assert!(!shown.contains(&format!("password={password}")), "{}", shown);
            prop_assert!(shown.ends_with("&password=[redacted]&sslmode=require"), "{}", shown);
        }

        #[test]
        fn no_password_survives(user in "[a-z]{0,6}", password in "[^@/]{1,12}", host in "[a-z0-9.]{1,12}") {
            let url = format!("redis://{user}:{password}@{host}:6379");
            let shown = redact_url(&url);
            let secret = format!(":{password}@");
            let tail = format!("@{host}:6379");
            prop_assert!(!shown.contains(&secret), "{}", shown);
            prop_assert!(shown.ends_with(&tail), "{}", shown);
        }
    }
}
