//! How the suite writes text it does not control: an event id or type on a line of a program's
//! output, and a URL that may carry a password. One rule each, used by the example receivers,
//! the `airmy-webhook` tool and anything else that prints them.
//!
//! ```
//! use airmy_verify::text::{redact_url, word};
//!
//! // A signed id can hold anything JSON allows, a newline included: it must not add a line.
//! assert_eq!(word("evt_1\nhandled evt_2 test"), r"evt_1\u{a}handled\u{20}evt_2\u{20}test");
//! assert_eq!(word(""), r#""""#);
//! assert_eq!(redact_url("redis://:hunter2@127.0.0.1:6379/0"), "redis://[redacted]@127.0.0.1:6379/0");
//! ```

use std::borrow::Cow;

/// `text` as one word of a line: whitespace, control characters, backslashes and double quotes
/// written as `\u{…}` (the character's code in hex), so that an event id or type can never
/// break a line, add one, or split into two words; an empty text is `""` (which no escaped
/// word can be). Text without such characters is returned as it is, without a copy.
#[must_use]
pub fn word(text: &str) -> Cow<'_, str> {
    if text.is_empty() {
        return Cow::Borrowed("\"\"");
    }
    let escaped = |c: char| c.is_whitespace() || c.is_control() || c == '\\' || c == '"';
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
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
