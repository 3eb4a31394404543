//! Durations as the original's flags and `--scheduler-config` file write them (Go syntax):
//! a sequence of decimal numbers, each with an optional fraction and a unit, e.g. `5s`,
//! `1.5s`, `2m`, `1h30m`, `250ms`. Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`.

use std::time::Duration;

/// A string that is not a duration; the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {problem} (examples: 5s, 1.5s, 2m, 1h30m, 250ms)")]
pub struct DurationError {
    input: String,
    problem: &'static str,
}

/// Parses a Go duration. Negative durations are refused; `0` alone is zero.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |problem| DurationError { input: input.to_owned(), problem };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("must not be negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| err("not a number"))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|_| err("too large"))
}

/// Formats in Go's style (`1h30m0s` is written `1h30m`; sub-second values in `ms`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let total_ms = d.as_millis();
    if total_ms < 1000 {
        return format!("{}ms", d.as_secs_f64() * 1000.0);
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let frac = d.subsec_millis();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || frac > 0 {
        if frac > 0 {
            out.push_str(&format!("{}s", s as f64 + f64::from(frac) / 1000.0));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse(" 20m "), Ok(Duration::from_secs(1200)));
    }

    #[test]
    fn refuses_nonsense_with_a_reason() {
        assert!(parse("5").unwrap_err().to_string().contains("missing unit"));
        assert!(parse("5x").unwrap_err().to_string().contains("unknown unit"));
        assert!(parse("-5s").unwrap_err().to_string().contains("negative"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("1e400h").is_err());
        assert!(parse("99999999999999999999h").unwrap_err().to_string().contains("too large"));
    }

    #[test]
    fn formats_round_trip() {
        for s in ["5s", "2m", "1h30m", "250ms", "1.5s", "0s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
