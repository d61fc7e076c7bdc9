//! What every destination does with HTTP the same way: keeping secrets out of what it prints
//! ([`Secrets`], [`without_credentials`]), reading a server's `Retry-After` ([`retry_after`]),
//! and turning errors and server answers into one printable line ([`error_chain`],
//! [`server_text`]).

use std::{
    borrow::Cow,
    collections::BTreeSet,
    fmt,
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use percent_encoding::percent_decode_str;

use crate::text::printable;

/// Characters of a server's text kept in a message.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Secret values (an API key, header values, a URL's password) that must not appear in anything
/// amprof prints or writes. Servers may echo them in their answers: [`Secrets::hide`] replaces
/// them in such text, before it is cut short (a secret cut in two would otherwise show its
/// first part).
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} hidden)", self.0.len())
    }
}

impl Secrets {
    /// Shorter values and words are not hidden: they would mangle every message (a header
    /// `x-org=1`), and hide nothing worth hiding.
    const MIN_CHARS: usize = 6;

    /// The secrets in `values`: each value, and each of its words (a token echoed without its
    /// `Bearer`), but for authorization schemes.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        const SCHEMES: [&str; 6] = ["bearer", "basic", "digest", "negotiate", "token", "apikey"];
        let mut hidden = BTreeSet::new();
        for value in values {
            let value = value.trim();
            let words = value.split(|c: char| c.is_whitespace() || c == ',');
            for text in std::iter::once(value).chain(words) {
                if text.chars().count() >= Self::MIN_CHARS
                    && !SCHEMES.contains(&text.to_ascii_lowercase().as_str())
                {
                    hidden.insert(text.to_string());
                }
            }
        }
        let mut hidden: Vec<String> = hidden.into_iter().collect();
        // The longest first: a whole value goes before its words.
        hidden.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self(hidden)
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn hide(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// `url` without its user and password, for anything amprof prints or writes:
/// `scheme://user:password@host/path` becomes `scheme://***@host/path`. The user and password
/// end at the last `@` of the authority; in a URL without a scheme or one that does not parse,
/// where a password may hold a `/`, `?` or `#` (the user mistyped it), everything up to the last
/// `@` is hidden.
pub fn without_credentials(url: &str) -> Cow<'_, str> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let at = match (rest[..authority_end].rfind('@'), rest.rfind('@')) {
        (Some(at), _) => at,
        (None, Some(at)) if scheme.is_none() || reqwest::Url::parse(url).is_err() => at,
        _ => return Cow::Borrowed(url),
    };
    let host = &rest[at + 1..];
    Cow::Owned(match scheme {
        Some(scheme) => format!("{scheme}://***@{host}"),
        None => format!("***@{host}"),
    })
}

/// The secrets in the user and password of `url`, if it has any: each of them, percent-decoded,
/// and `user:password` as HTTP basic authentication sends it (in base64), for [`Secrets`].
pub fn url_credentials(url: &str) -> Vec<String> {
    let Ok(url) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let (user, password) = (decode(url.username()), url.password().map(decode));
    if user.is_empty() && password.is_none() {
        return Vec::new();
    }
    let pair = format!("{user}:{}", password.as_deref().unwrap_or(""));
    let basic = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
    let mut secrets = vec![basic, pair, user];
    secrets.extend(password);
    secrets
}

/// How long a `Retry-After` header value asks to wait: delay-seconds, or an HTTP-date (RFC 9110)
/// measured from `now`. `None` if it is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    // A date in the past means "now".
    Some(date.duration_since(now).unwrap_or_default())
}

/// An error and its causes on one line (a client's top level alone says little), control
/// characters made visible: causes may quote the server (names in its certificate).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    printable(&text).into_owned()
}

/// A server's `text` for a message: echoed secrets hidden, on one line, control characters
/// made visible (a terminal shows it), cut to [`MAX_MESSAGE_CHARS`].
pub fn server_text(text: &str, secrets: &Secrets) -> String {
    let text = secrets.hide(text);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&printable(&text), MAX_MESSAGE_CHARS)
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_whole_and_word_by_word() {
        let secrets = Secrets::new(["Bearer s3cret-t0ken", "0123456789abcdef", "1", "tenant"]);
        assert_eq!(
            secrets.hide("got Bearer s3cret-t0ken, then s3cret-t0ken, key 0123456789abcdef"),
            "got <redacted>, then <redacted>, key <redacted>"
        );
        // Too short to hide: it would mangle messages.
        assert_eq!(secrets.hide("HTTP 401"), "HTTP 401");
        assert_eq!(secrets.hide("Bearer tokens"), "Bearer tokens");
        assert_eq!(secrets.hide("tenant-2"), "<redacted>-2");
        assert!(!format!("{secrets:?}").contains("s3cret"));
    }

    #[test]
    fn credentials_in_urls_are_never_shown() {
        for (url, shown) in [
            (
                "https://u:secret@h:1/v1development/profiles",
                "https://***@h:1/v1development/profiles",
            ),
            ("http://h:1/a@b", "http://h:1/a@b"),
            ("http://h:1/?q=a@b", "http://h:1/?q=a@b"),
            ("http://localhost:8126", "http://localhost:8126"),
            (
                "unix:///var/run/datadog/apm.socket",
                "unix:///var/run/datadog/apm.socket",
            ),
            ("http://user@h:1", "http://***@h:1"),
            ("http://u:p@ss@h:1/x", "http://***@h:1/x"),
            // Mistyped passwords: the URL does not parse, or has no scheme.
            ("http://user:pa/ss@h:1/x", "http://***@h:1/x"),
            ("http://user:pa?ss@h:1", "http://***@h:1"),
            ("user:pa/ss@h:4317", "***@h:4317"),
            ("user:pass@h:4317", "***@h:4317"),
        ] {
            assert_eq!(without_credentials(url), shown, "{url}");
        }
    }

    #[test]
    fn url_credentials_are_secrets_as_sent() {
        let secrets = url_credentials("https://alice:s3cr%40t-pw@h:1/p");
        assert!(secrets.contains(&"s3cr@t-pw".to_string()), "{secrets:?}");
        assert!(secrets.contains(&"alice".to_string()));
        // What `Authorization: Basic` carries for alice:s3cr@t-pw.
        assert!(
            secrets.contains(&"YWxpY2U6czNjckB0LXB3".to_string()),
            "{secrets:?}"
        );
        assert!(url_credentials("https://h:1/p").is_empty());
        assert!(url_credentials("not a url").is_empty());
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Tue, 01 Dec 2026 10:00:00 GMT").unwrap();
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn server_text_is_one_safe_line() {
        let secrets = Secrets::new(["Bearer s3cret-t0ken"]);
        // The token straddles the cut: hidden first, it cannot show in part.
        let body = format!("{} s3cret-t0ken", "x".repeat(MAX_MESSAGE_CHARS - 5));
        assert!(server_text(&body, &secrets).ends_with("x <red..."));
        assert_eq!(server_text("a\n\x1b[2J b", &secrets), r"a \x1b[2J b");
    }
}
