//! `mesos-cloud.conf`: where the master is and how long to wait for and
//! remember its answers.
//!
//! ```ini
//! [mesos-cloud]
//! mesos-master = leader.mesos:5050
//! http-client-timeout = 10s
//! state-cache-ttl = 5s
//! ```
//!
//! Every key is optional and an empty file means all defaults. Names of the
//! section and keys are matched without regard to case (as the original's
//! gcfg reader did); anything the file holds besides these keys is refused,
//! so a typo cannot silently fall back to a default. Durations use Go's
//! syntax (`10s`, `1.5s`, `500ms`, `1m30s`), which is what the original
//! accepted.

use std::path::Path;
use std::time::Duration;

use reqwest::Url;

use crate::error::{CloudError, ConfigProblem};

/// The section of the file.
pub const SECTION: &str = "mesos-cloud";

/// The master when the file names none.
pub const DEFAULT_MASTER: &str = "localhost:5050";

/// The port of a master named without one.
const DEFAULT_MASTER_PORT: u16 = 5050;

/// How the cloud provider reaches the Mesos master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// `mesos-master`: base URL of any master of the cluster (non-leading
    /// masters redirect to the leader). Always `http`, with a port; a path,
    /// if any, is a prefix put before every endpoint (a master behind a
    /// proxy).
    pub mesos_master: Url,
    /// `http-client-timeout`: limit of every request to the master.
    pub http_client_timeout: Duration,
    /// `state-cache-ttl`: how long an answer of the master is reused; zero
    /// asks the master every time.
    pub state_cache_ttl: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            mesos_master: Url::parse(&format!("http://{DEFAULT_MASTER}/"))
                .unwrap_or_else(|_| unreachable!("the default master is a valid URL")),
            http_client_timeout: Duration::from_secs(10),
            state_cache_ttl: Duration::from_secs(5),
        }
    }
}

impl CloudConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, CloudError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CloudError::ConfigRead { path: path.to_owned(), source })?;
        Self::parse_from(&text, &path.display().to_string())
    }

    /// Parses the text of a config file. Errors name the origin as
    /// `<text>`; [`CloudConfig::load`] names the file instead.
    pub fn parse(text: &str) -> Result<Self, CloudError> {
        Self::parse_from(text, "<text>")
    }

    fn parse_from(text: &str, origin: &str) -> Result<Self, CloudError> {
        parse_ini(text).map_err(|problem| CloudError::Config { origin: origin.to_owned(), problem })
    }
}

fn parse_ini(text: &str) -> Result<CloudConfig, ConfigProblem> {
    let ini =
        ini::Ini::load_from_str_noescape(text).map_err(|e| ConfigProblem::Syntax(e.to_string()))?;
    let mut config = CloudConfig::default();
    let mut seen: Vec<String> = Vec::new();
    for (section, props) in ini.iter() {
        match section {
            None => {
                // rust-ini always yields a section for keys before any
                // header; it is only a problem when it holds keys.
                if let Some((key, _)) = props.iter().next() {
                    return Err(ConfigProblem::KeyOutsideSection(key.to_owned()));
                }
                continue;
            }
            Some(name) if name.trim().eq_ignore_ascii_case(SECTION) => {}
            Some(name) => return Err(ConfigProblem::UnknownSection(name.to_owned())),
        }
        for (key, value) in props.iter() {
            let key = key.trim().to_ascii_lowercase();
            if seen.contains(&key) {
                return Err(ConfigProblem::DuplicateKey(key));
            }
            let value = unquote(value.trim());
            let bad = |problem: String| ConfigProblem::BadValue {
                key: key.clone(),
                value: value.to_owned(),
                problem,
            };
            match key.as_str() {
                "mesos-master" => config.mesos_master = parse_master(value)?,
                "http-client-timeout" => {
                    let d = parse_go_duration(value).map_err(bad)?;
                    if d.is_zero() {
                        return Err(bad("must be greater than zero".into()));
                    }
                    config.http_client_timeout = d;
                }
                "state-cache-ttl" => {
                    config.state_cache_ttl = parse_go_duration(value).map_err(bad)?
                }
                _ => return Err(ConfigProblem::UnknownKey(key)),
            }
            seen.push(key);
        }
    }
    Ok(config)
}

/// gcfg allowed values in double quotes; take them off.
fn unquote(value: &str) -> &str {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
}

/// `host`, `host:port`, `http://host[:port][/prefix]`; ZooKeeper and TLS
/// URLs are refused.
pub(crate) fn parse_master(value: &str) -> Result<Url, ConfigProblem> {
    let bad = |problem: &str| ConfigProblem::BadValue {
        key: "mesos-master".into(),
        value: value.to_owned(),
        problem: problem.to_owned(),
    };
    if value.is_empty() {
        return Err(bad("empty; give host:port or http://host:port"));
    }
    let lower = value.to_ascii_lowercase();
    if lower.starts_with("zk://") {
        return Err(ConfigProblem::ZooKeeper(value.to_owned()));
    }
    if lower.starts_with("https://") {
        return Err(bad("https is not supported (km talks plain HTTP to Mesos masters)"));
    }
    let full = if lower.starts_with("http://") {
        value.to_owned()
    } else if lower.contains("://") {
        return Err(bad("the only scheme understood is http://"));
    } else {
        format!("http://{value}")
    };
    let mut url = Url::parse(&full).map_err(|e| bad(&format!("not a URL: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not supported"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query or fragment makes no sense here"));
    }
    if !has_explicit_port(&full) {
        url.set_port(Some(DEFAULT_MASTER_PORT)).map_err(|()| bad("cannot set the port"))?;
    }
    Ok(url)
}

/// Whether `http://authority/...` names a port. (`Url::port` cannot tell:
/// it hides an explicit `:80`, the scheme's default.)
fn has_explicit_port(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let after_host = match authority.rfind(']') {
        Some(end) => &authority[end + 1..],
        None => authority,
    };
    after_host.rsplit_once(':').is_some_and(|(_, port)| !port.is_empty())
}

/// Parses a duration as Go's `time.ParseDuration` does: one or more
/// `<decimal><unit>` terms (`1h30m`, `1.5s`), units `ns us µs ms s m h`, and
/// a bare `0`. Negative durations are refused: nothing here can wait less
/// than nothing.
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "examples: 10s, 500ms, 1m, 1h30m";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration ({HINT})"));
    }
    let s = match s.strip_prefix('+') {
        Some(rest) => rest,
        None if s.starts_with('-') => return Err("a negative duration is not allowed".into()),
        None => s,
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        if number.is_empty() || number == "." {
            return Err(format!("expected a number at {rest:?} ({HINT})"));
        }
        let number: f64 = number.parse().map_err(|_| format!("bad number {number:?} ({HINT})"))?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit after {number} ({HINT})")),
            other => return Err(format!("unknown unit {other:?} ({HINT})")),
        };
        total_nanos += number * nanos_per_unit;
        rest = after;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err("too large".into());
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> ConfigProblem {
        match CloudConfig::parse(text) {
            Err(CloudError::Config { problem, .. }) => problem,
            other => panic!("expected a config problem for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn empty_text_means_defaults() {
        let c = CloudConfig::parse("").unwrap();
        assert_eq!(c, CloudConfig::default());
        assert_eq!(c.mesos_master.as_str(), "http://localhost:5050/");
        assert_eq!(c.http_client_timeout, Duration::from_secs(10));
        assert_eq!(c.state_cache_ttl, Duration::from_secs(5));
        // Comments and an empty section change nothing either.
        let c = CloudConfig::parse("; a comment\n# another\n[mesos-cloud]\n").unwrap();
        assert_eq!(c, CloudConfig::default());
    }

    #[test]
    fn every_key_is_read() {
        let c = CloudConfig::parse(
            "[mesos-cloud]\n\
             mesos-master = 10.1.2.3:5051\n\
             http-client-timeout = 1m30s\n\
             state-cache-ttl = 500ms\n",
        )
        .unwrap();
        assert_eq!(c.mesos_master.as_str(), "http://10.1.2.3:5051/");
        assert_eq!(c.http_client_timeout, Duration::from_secs(90));
        assert_eq!(c.state_cache_ttl, Duration::from_millis(500));
    }

    #[test]
    fn names_ignore_case_and_values_may_be_quoted() {
        let c = CloudConfig::parse("[Mesos-Cloud]\nMesos-Master = \"http://m1:5050\"\n").unwrap();
        assert_eq!(c.mesos_master.as_str(), "http://m1:5050/");
    }

    #[test]
    fn master_forms() {
        let url = |v: &str| parse_master(v).map(|u| u.to_string());
        assert_eq!(url("m1:5050").unwrap(), "http://m1:5050/");
        assert_eq!(url("m1").unwrap(), "http://m1:5050/");
        assert_eq!(url("http://m1:7070").unwrap(), "http://m1:7070/");
        assert_eq!(url("HTTP://m1").unwrap(), "http://m1:5050/");
        assert_eq!(url("http://proxy:80/mesos").unwrap(), "http://proxy/mesos");
        assert_eq!(url("http://proxy/mesos/").unwrap(), "http://proxy:5050/mesos/");
        assert_eq!(url("[::1]:5050").unwrap(), "http://[::1]:5050/");
        assert!(matches!(parse_master("https://m1:5050"), Err(ConfigProblem::BadValue { .. })));
        assert!(matches!(parse_master("ftp://m1"), Err(ConfigProblem::BadValue { .. })));
        assert!(matches!(parse_master(""), Err(ConfigProblem::BadValue { .. })));
        assert!(matches!(parse_master("http://u:p@m1"), Err(ConfigProblem::BadValue { .. })));
    }

    #[test]
    fn zookeeper_is_refused_with_a_pointer_to_the_alternative() {
        let p = problem("[mesos-cloud]\nmesos-master = zk://zk1:2181,zk2:2181/mesos\n");
        assert_eq!(p, ConfigProblem::ZooKeeper("zk://zk1:2181,zk2:2181/mesos".into()));
        let text = p.to_string();
        assert!(text.contains("ZooKeeper is not supported"), "{text}");
        assert!(text.contains("http://host:5050"), "{text}");
    }

    #[test]
    fn unknown_keys_and_sections_are_named() {
        assert_eq!(
            problem("[mesos-cloud]\nstate-cache-tll = 5s\n"),
            ConfigProblem::UnknownKey("state-cache-tll".into())
        );
        assert_eq!(
            problem("[mesos-cloud]\n[global]\nx = 1\n"),
            ConfigProblem::UnknownSection("global".into())
        );
        assert_eq!(
            problem("mesos-master = m1:5050\n[mesos-cloud]\n"),
            ConfigProblem::KeyOutsideSection("mesos-master".into())
        );
        assert_eq!(
            problem("[mesos-cloud]\nstate-cache-ttl = 1s\nSTATE-CACHE-TTL = 2s\n"),
            ConfigProblem::DuplicateKey("state-cache-ttl".into())
        );
        let e = CloudConfig::parse("[mesos-cloud]\nbogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("<text>") && e.contains("\"bogus\""), "{e}");
    }

    #[test]
    fn bad_durations_name_key_and_value() {
        for (text, key) in [
            ("[mesos-cloud]\nhttp-client-timeout = 10\n", "http-client-timeout"),
            ("[mesos-cloud]\nhttp-client-timeout = 0s\n", "http-client-timeout"),
            ("[mesos-cloud]\nstate-cache-ttl = soon\n", "state-cache-ttl"),
            ("[mesos-cloud]\nstate-cache-ttl = 5 secs\n", "state-cache-ttl"),
            ("[mesos-cloud]\nstate-cache-ttl = -5s\n", "state-cache-ttl"),
        ] {
            match problem(text) {
                ConfigProblem::BadValue { key: k, .. } => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // Zero is a fine cache TTL: it turns the cache off.
        let c = CloudConfig::parse("[mesos-cloud]\nstate-cache-ttl = 0\n").unwrap();
        assert_eq!(c.state_cache_ttl, Duration::ZERO);
    }

    #[test]
    fn go_durations() {
        let d = |s: &str| parse_go_duration(s);
        assert_eq!(d("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(d("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(d("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(d("+2s"), Ok(Duration::from_secs(2)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "1x", "1.s.", ".s", "1 s", "-1s", "1d"] {
            assert!(d(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesos-cloud.conf");
        std::fs::write(&path, "[mesos-cloud]\nmesos-master = m2:5050\n").unwrap();
        let c = CloudConfig::load(&path).unwrap();
        assert_eq!(c.mesos_master.as_str(), "http://m2:5050/");
        std::fs::write(&path, "[kubernetes]\n").unwrap();
        let e = CloudConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains("[kubernetes]"), "{e}");
        let missing = dir.path().join("nope.conf");
        assert!(matches!(CloudConfig::load(&missing), Err(CloudError::ConfigRead { .. })));
    }
}
