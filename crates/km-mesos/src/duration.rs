//! Durations as Mesos writes them (stout): `5secs`, `15mins`, `250ms`, `1.5hrs`, and the
//! short forms `5s`, `2m`, `1h`, `3d` that people type.
//!
//! The agent passes such strings to executors in the environment
//! (`MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD=5secs`), and every Mesos-style flag of
//! `km mesos-master` and `km mesos-agent` is read with [`parse`]. [`format`] always writes
//! stout's long units, which real Mesos executors read back.

use std::time::Duration;

/// stout's units, written by [`format`] (smallest first).
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

/// The short forms [`parse`] accepts beside stout's units.
const SHORT_UNITS: &[(&str, f64)] = &[("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86_400.0)];

/// A string that is not a duration; the message names the string and what is wrong with it.
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

/// The longest duration Mesos can express: stout keeps durations as signed 64-bit nanoseconds
/// (about 292 years). A longer one is refused, which also keeps `Instant::now() + d` from
/// overflowing wherever a parsed duration becomes a deadline.
pub const MAX: Duration = Duration::from_nanos(i64::MAX as u64);

/// Parses `<number><unit>`: a decimal number (a fraction and an exponent allowed) followed
/// by one of `ns us ms secs s mins m hrs h days d weeks`. Negative, NaN and infinite numbers
/// and durations beyond what [`Duration`] holds are refused.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |problem| ParseDurationError { input: input.to_owned(), problem };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    // The longest unit that ends the text wins, so `ms` is not read as `m` + `s`.
    let (number, scale) = UNITS
        .iter()
        .chain(SHORT_UNITS)
        .filter_map(|(name, scale)| s.strip_suffix(name).map(|n| (n, *name, *scale)))
        .max_by_key(|(_, name, _)| name.len())
        .map(|(n, _, scale)| (n.trim(), scale))
        .ok_or_else(|| {
            if s.ends_with(|c: char| c.is_ascii_digit() || c == '.') {
                err("missing unit (ns, us, ms, secs or s, mins or m, hrs or h, days or d, weeks)")
            } else {
                err("unknown unit (ns, us, ms, secs or s, mins or m, hrs or h, days or d, weeks)")
            }
        })?;
    if number.is_empty() {
        return Err(err("missing number before the unit"));
    }
    if number.starts_with('-') {
        return Err(err("must not be negative"));
    }
    let value: f64 = number.parse().map_err(|_| err("not a number"))?;
    if value.is_nan() {
        return Err(err("not a number"));
    }
    let secs = value * scale;
    if secs.is_infinite() {
        return Err(err("too large (at most 2^63-1 ns, as in Mesos)"));
    }
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX)
        .ok_or_else(|| err("too large (at most 2^63-1 ns, as in Mesos)"))
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
    fn every_unit_long_and_short() {
        for (text, d) in [
            ("7ns", Duration::from_nanos(7)),
            ("7us", Duration::from_micros(7)),
            ("7ms", Duration::from_millis(7)),
            ("7secs", Duration::from_secs(7)),
            ("7s", Duration::from_secs(7)),
            ("7mins", Duration::from_secs(420)),
            ("7m", Duration::from_secs(420)),
            ("7hrs", Duration::from_secs(7 * 3600)),
            ("7h", Duration::from_secs(7 * 3600)),
            ("7days", Duration::from_secs(7 * 86_400)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("7weeks", Duration::from_secs(7 * 604_800)),
            (" 7 s ", Duration::from_secs(7)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn fractions_and_exponents() {
        assert_eq!(parse("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse(".25secs"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2.5ms"), Ok(Duration::from_micros(2500)));
        assert_eq!(parse("1e3ms"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("0.5d"), Ok(Duration::from_secs(43_200)));
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        let msg = |s: &str| parse(s).unwrap_err().to_string();
        assert!(msg("5").starts_with("invalid duration '5': missing unit"), "{}", msg("5"));
        assert!(msg("5x").contains("unknown unit"), "{}", msg("5x"));
        assert!(msg("5 fortnight").contains("unknown unit"));
        assert!(msg("secs").contains("missing number"), "{}", msg("secs"));
        assert_eq!(msg(" "), "invalid duration ' ': empty");
        assert_eq!(msg("-1secs"), "invalid duration '-1secs': must not be negative");
        assert!(msg("-0s").contains("negative"));
        assert_eq!(msg("NaNs"), "invalid duration 'NaNs': not a number");
        assert_eq!(msg("nansecs"), "invalid duration 'nansecs': not a number");
        assert!(msg("xsecs").contains("not a number"), "{}", msg("xsecs"));
        assert!(msg("1.2.3s").contains("not a number"));
        assert!(msg("infs").contains("too large"), "{}", msg("infs"));
        assert!(msg("1e300weeks").contains("too large"), "{}", msg("1e300weeks"));
        // Mesos's limit: 2^63-1 ns, about 15,250 weeks.
        assert!(parse("15000weeks").is_ok());
        assert!(msg("16000weeks").contains("at most 2^63-1 ns"), "{}", msg("16000weeks"));
        assert!(msg("99999999999999999999secs").contains("too large"));
        assert!(msg("1e400s").contains("too large"), "{}", msg("1e400s"));
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
