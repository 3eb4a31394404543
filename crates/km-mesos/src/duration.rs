//! Durations as Mesos writes them (stout): `5secs`, `15mins`, `250ms`, `1.5hrs`.
//!
//! The agent passes such strings to executors in the environment
//! (`MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD=5secs`), and Mesos flags take them.

use std::time::Duration;

const UNITS: &[(&str, f64)] = &[
    ("ns", 1e-9),
    ("us", 1e-6),
    ("ms", 1e-3),
    ("secs", 1.0),
    ("mins", 60.0),
    ("hrs", 3600.0),
    ("days", 86_400.0),
    ("weeks", 604_800.0),
];

/// A string that is not a stout duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration '{input}': {problem}")]
pub struct ParseDurationError {
    input: String,
    problem: &'static str,
}

/// A number of seconds sent by a peer (a heartbeat interval, a timeout), as a duration of at
/// most `max`; `None` unless it is a positive number. Never panics, whatever the value.
pub fn from_peer_secs(secs: f64, max: Duration) -> Option<Duration> {
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max)))
}

/// Parses `<number><unit>` with unit one of `ns us ms secs mins hrs days weeks`.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |problem| ParseDurationError { input: input.to_owned(), problem };
    let s = input.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(|| err("missing unit"))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number.trim().parse().map_err(|_| err("not a number"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(err("must be a finite, non-negative number"));
    }
    let (_, scale) = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(|| err("unknown unit (ns, us, ms, secs, mins, hrs, days, weeks)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| err("too large"))
}

/// Formats as stout does: the largest unit not exceeding the value, as an
/// integer when exact (`5secs`, `15mins`) and a decimal otherwise (`1.5mins`).
pub fn format(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let (name, scale) =
        UNITS.iter().rev().find(|(_, scale)| secs >= *scale).copied().unwrap_or(UNITS[0]);
    let value = secs / scale;
    let rounded = (value * 1e6).round() / 1e6;
    if rounded.fract() == 0.0 {
        format!("{}{name}", rounded as u64)
    } else {
        format!("{rounded}{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_seconds_are_bounded_and_never_panic() {
        let max = Duration::from_secs(86_400);
        assert_eq!(from_peer_secs(15.0, max), Some(Duration::from_secs(15)));
        assert_eq!(from_peer_secs(0.25, max), Some(Duration::from_millis(250)));
        for huge in [1e7, 1e19, 1e300, f64::INFINITY, f64::MAX] {
            assert_eq!(from_peer_secs(huge, max), Some(max), "{huge}");
        }
        for bad in [0.0, -1.0, -0.0, f64::NAN, f64::NEG_INFINITY, -1e300] {
            assert_eq!(from_peer_secs(bad, max), None, "{bad}");
        }
    }

    #[test]
    fn parses_what_the_agent_writes() {
        assert_eq!(parse("5secs"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("15mins"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5hrs"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2weeks"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        assert_eq!(parse("5").unwrap_err().to_string(), "invalid duration '5': missing unit");
        assert!(parse("5s").is_err());
        assert!(parse("-1secs").is_err());
        assert!(parse("xsecs").is_err());
    }

    #[test]
    fn formats_like_stout() {
        assert_eq!(format(Duration::from_secs(5)), "5secs");
        assert_eq!(format(Duration::from_secs(900)), "15mins");
        assert_eq!(format(Duration::from_secs(2)), "2secs");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_secs(90)), "1.5mins");
        assert_eq!(format(Duration::ZERO), "0ns");
        for d in ["5secs", "15mins", "1.5mins", "3days", "250ms"] {
            assert_eq!(format(parse(d).unwrap()), d);
        }
    }
}
