//! How long an idle model stays loaded, written as Ollama's clients write it.

use std::fmt;
use std::time::Duration;

use crate::{Error, Result};

/// How long a model stays loaded after its last request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Until it is unloaded by hand or evicted for room.
    Forever,
    /// This long after its last request (zero: unload as soon as it is idle).
    For(Duration),
}

impl KeepAlive {
    /// Unload as soon as the model is idle.
    pub const NONE: KeepAlive = KeepAlive::For(Duration::ZERO);

    /// Reads a duration as Ollama takes it: `5m`, `1h30m`, `45s`, `300ms`, a bare number of
    /// seconds, `0` (unload at once), a negative number or `forever`/`-1` (never unload).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = || {
            Error::invalid_field(
                "keep_alive",
                format!(
                    "keep_alive `{text}` is not a duration: use 5m, 1h30m, 45s, seconds, 0 to \
                     unload at once or -1 to keep the model loaded"
                ),
            )
        };
        if text.eq_ignore_ascii_case("forever") || text.eq_ignore_ascii_case("infinite") {
            return Ok(Self::Forever);
        }
        if let Ok(seconds) = text.parse::<f64>() {
            return Self::from_seconds(seconds).ok_or_else(bad);
        }
        if let Some(magnitude) = text.strip_prefix('-') {
            // A negative duration such as `-1m`: forever, as Ollama reads it.
            return parse_units(magnitude)
                .map(|_| Self::Forever)
                .ok_or_else(bad);
        }
        parse_units(text).map(Self::For).ok_or_else(bad)
    }

    /// From a number of seconds: negative is forever; not a finite number is `None`.
    pub fn from_seconds(seconds: f64) -> Option<Self> {
        if !seconds.is_finite() {
            return None;
        }
        if seconds < 0.0 {
            return Some(Self::Forever);
        }
        Duration::try_from_secs_f64(seconds).ok().map(Self::For)
    }

    /// From a JSON value: a string duration or a number of seconds.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        match value {
            serde_json::Value::String(text) => Self::parse(text),
            serde_json::Value::Number(n) => n
                .as_f64()
                .and_then(Self::from_seconds)
                .ok_or_else(|| Error::invalid_field("keep_alive", "not a usable number")),
            _ => Err(Error::invalid_field(
                "keep_alive",
                "must be a duration string (5m) or a number of seconds",
            )),
        }
    }

    /// The time left before an idle model is unloaded; `None` for forever.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Self::Forever => None,
            Self::For(d) => Some(d),
        }
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forever => f.write_str("forever"),
            Self::For(d) => write!(f, "{}s", d.as_secs_f64()),
        }
    }
}

/// `1h30m`, `45s`, `300ms`, `2.5m`: numbers each followed by h, m, s, ms, us or ns.
fn parse_units(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ollama_durations() {
        let secs = |s: u64| KeepAlive::For(Duration::from_secs(s));
        assert_eq!(KeepAlive::parse("5m").unwrap(), secs(300));
        assert_eq!(KeepAlive::parse("1h30m").unwrap(), secs(5400));
        assert_eq!(KeepAlive::parse("45s").unwrap(), secs(45));
        assert_eq!(
            KeepAlive::parse("300ms").unwrap(),
            KeepAlive::For(Duration::from_millis(300))
        );
        assert_eq!(KeepAlive::parse("0").unwrap(), KeepAlive::NONE);
        assert_eq!(KeepAlive::parse("120").unwrap(), secs(120));
        assert_eq!(KeepAlive::parse("-1").unwrap(), KeepAlive::Forever);
        assert_eq!(KeepAlive::parse("-1m").unwrap(), KeepAlive::Forever);
        assert_eq!(KeepAlive::parse("forever").unwrap(), KeepAlive::Forever);
        for bad in ["", "5x", "m", "five minutes", "1h-2m"] {
            let err = KeepAlive::parse(bad).unwrap_err();
            assert_eq!(err.field(), Some("keep_alive"), "{bad}");
        }
        assert_eq!(
            KeepAlive::from_json(&serde_json::json!(0)).unwrap(),
            KeepAlive::NONE
        );
        assert_eq!(
            KeepAlive::from_json(&serde_json::json!(-1)).unwrap(),
            KeepAlive::Forever
        );
        assert!(KeepAlive::from_json(&serde_json::json!(true)).is_err());
    }
}
