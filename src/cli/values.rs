//! The values flags take: durations, sizes, window lists. Each parser says what it expects in
//! its error, which clap shows on one line (exit code 2).

use std::{ops::RangeInclusive, str::FromStr, time::Duration};

/// `30s`, `1m30s`, `500ms`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..1e9).contains(&seconds) => {
            Ok(Duration::from_secs_f64(seconds))
        }
        Ok(_) => Err(format!("`{text}` is not a duration")),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("`{text}` is not a duration like 30s, 2m or 500ms ({e})")),
    }?;
    if parsed > Duration::from_secs(365 * 24 * 3600) {
        return Err(format!("`{text}` is longer than a year"));
    }
    Ok(parsed)
}

/// `4194304`, `512KiB`, `4MiB`, `4MB`...
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("`{text}` is not a size like 4MiB or 500000")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{text}` is not a size like 4MiB or 500000"))
}

/// A power of two of at least a page, in bytes (the ring buffer's size).
pub fn parse_ring_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of bytes"))?;
    if !bytes.is_power_of_two() || bytes < 4096 {
        return Err(format!("{bytes} is not a power of two of at least 4096"));
    }
    Ok(bytes)
}

/// A window range: `N` or `A..B` (inclusive; `A..=B` too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowRange(pub RangeInclusive<u64>);

impl FromStr for WindowRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let number = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{s}` is not a window number or range like 2..5"))
        };
        match s.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b.trim_start_matches('='))?);
                if a > b {
                    return Err(format!("window range {s} is empty"));
                }
                Ok(Self(a..=b))
            }
            None => number(s).map(|n| Self(n..=n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("100y").is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(parse_ring_bytes("65536"), Ok(65536));
        assert!(parse_ring_bytes("65535").is_err());
        assert!(parse_ring_bytes("2048").is_err());
    }

    #[test]
    fn parses_window_ranges() {
        assert_eq!("3".parse::<WindowRange>().unwrap().0, 3..=3);
        assert_eq!("2..5".parse::<WindowRange>().unwrap().0, 2..=5);
        assert_eq!("2..=5".parse::<WindowRange>().unwrap().0, 2..=5);
        assert!("5..2".parse::<WindowRange>().is_err());
        assert!("x".parse::<WindowRange>().is_err());
        assert!("-1".parse::<WindowRange>().is_err());
    }
}
