//! The `--scheduler-config` file: an ini file with one `[scheduler]` section holding the
//! original's tuning keys (and `refuse-seconds`, which the original hard-coded). Every key is
//! optional; an unknown section or key, or a bad value, is an error that names it.
//!
//! ```ini
//! [scheduler]
//! offer-ttl = 5s
//! refuse-seconds = 5
//! max-pod-backoff = 60s
//! ```

use std::path::Path;
use std::time::Duration;

use crate::duration;

/// The tuning values, with the original's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    /// `offer-ttl`: life of an unused offer held while pods wait.
    pub offer_ttl: Duration,
    /// `offer-linger-ttl`: how long the ID of a gone offer is remembered.
    pub offer_linger_ttl: Duration,
    /// `listener-delay`: pause between re-evaluations of pods in back-off against new offers.
    pub listener_delay: Duration,
    /// `updates-backlog`: pod events buffered between the API watch and the scheduler loop.
    pub updates_backlog: usize,
    /// `framework-id-refresh-interval`: how often the stored framework ID is refreshed.
    pub framework_id_refresh_interval: Duration,
    /// `initial-implicit-reconciliation-delay`.
    pub initial_implicit_reconciliation_delay: Duration,
    /// `explicit-reconciliation-max-backoff`.
    pub explicit_reconciliation_max_backoff: Duration,
    /// `explicit-reconciliation-abort-timeout`.
    pub explicit_reconciliation_abort_timeout: Duration,
    /// `initial-pod-backoff`.
    pub initial_pod_backoff: Duration,
    /// `max-pod-backoff`.
    pub max_pod_backoff: Duration,
    /// `http-handler-timeout`: debug handlers answer 503 after this.
    pub http_handler_timeout: Duration,
    /// `http-bind-interval`: retry period while the HTTP port cannot be bound.
    pub http_bind_interval: Duration,
    /// `refuse-seconds`: the filter of declines.
    pub refuse_seconds: f64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            offer_ttl: Duration::from_secs(5),
            offer_linger_ttl: Duration::from_secs(120),
            listener_delay: Duration::from_secs(1),
            updates_backlog: 2048,
            framework_id_refresh_interval: Duration::from_secs(30),
            initial_implicit_reconciliation_delay: Duration::from_secs(15),
            explicit_reconciliation_max_backoff: Duration::from_secs(120),
            explicit_reconciliation_abort_timeout: Duration::from_secs(30),
            initial_pod_backoff: Duration::from_secs(1),
            max_pod_backoff: Duration::from_secs(60),
            http_handler_timeout: Duration::from_secs(10),
            http_bind_interval: Duration::from_secs(5),
            refuse_seconds: 5.0,
        }
    }
}

/// The keys of the `[scheduler]` section.
pub const KEYS: &[&str] = &[
    "offer-ttl",
    "offer-linger-ttl",
    "listener-delay",
    "updates-backlog",
    "framework-id-refresh-interval",
    "initial-implicit-reconciliation-delay",
    "explicit-reconciliation-max-backoff",
    "explicit-reconciliation-abort-timeout",
    "initial-pod-backoff",
    "max-pod-backoff",
    "http-handler-timeout",
    "http-bind-interval",
    "refuse-seconds",
];

/// Why a scheduler config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum IniError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not ini.
    #[error("{path}: not an ini file: {message}")]
    Syntax {
        /// File.
        path: String,
        /// Parser message.
        message: String,
    },
    /// A section other than `[scheduler]`, or keys outside it.
    #[error("{path}: unknown section {section:?} (only [scheduler] is allowed)")]
    Section {
        /// File.
        path: String,
        /// Section name (empty: keys before any section).
        section: String,
    },
    /// An unknown key.
    #[error("{path}: unknown key {key:?} in [scheduler] (known keys: {known})")]
    UnknownKey {
        /// File.
        path: String,
        /// Key.
        key: String,
        /// The known keys.
        known: String,
    },
    /// A key given twice.
    #[error("{path}: key {key:?} is given more than once")]
    Duplicate {
        /// File.
        path: String,
        /// Key.
        key: String,
    },
    /// A bad value.
    #[error("{path}: [scheduler] {key} = {value:?}: {problem}")]
    Value {
        /// File.
        path: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// What is wrong.
        problem: String,
    },
}

/// Reads a scheduler config file.
pub fn load(path: &Path) -> Result<Tuning, IniError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| IniError::Read { path: name.clone(), source })?;
    parse(&name, &text)
}

/// Parses the text of a scheduler config file (`path` names it in errors).
pub fn parse(path: &str, text: &str) -> Result<Tuning, IniError> {
    let ini = ini::Ini::load_from_str_noescape(text)
        .map_err(|e| IniError::Syntax { path: path.to_owned(), message: e.to_string() })?;
    let mut t = Tuning::default();
    let mut seen: Vec<String> = Vec::new();
    for (section, props) in ini.iter() {
        match section {
            Some("scheduler") => {}
            None if props.is_empty() => continue,
            other => {
                return Err(IniError::Section {
                    path: path.to_owned(),
                    section: other.unwrap_or_default().to_owned(),
                });
            }
        }
        for (key, value) in props.iter() {
            let key = key.trim();
            if seen.iter().any(|k| k == key) {
                return Err(IniError::Duplicate { path: path.to_owned(), key: key.to_owned() });
            }
            seen.push(key.to_owned());
            let bad = |problem: String| IniError::Value {
                path: path.to_owned(),
                key: key.to_owned(),
                value: value.to_owned(),
                problem,
            };
            let dur = || duration::parse(value).map_err(|e| bad(e.to_string()));
            let positive = || {
                let d = dur()?;
                if d.is_zero() { Err(bad("must be greater than zero".into())) } else { Ok(d) }
            };
            match key {
                "offer-ttl" => t.offer_ttl = positive()?,
                "offer-linger-ttl" => t.offer_linger_ttl = dur()?,
                "listener-delay" => t.listener_delay = dur()?,
                "updates-backlog" => {
                    t.updates_backlog = value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .ok_or_else(|| bad("must be a whole number from 1 to 1000000".into()))?
                }
                "framework-id-refresh-interval" => t.framework_id_refresh_interval = positive()?,
                "initial-implicit-reconciliation-delay" => {
                    t.initial_implicit_reconciliation_delay = dur()?
                }
                "explicit-reconciliation-max-backoff" => {
                    t.explicit_reconciliation_max_backoff = positive()?
                }
                "explicit-reconciliation-abort-timeout" => {
                    t.explicit_reconciliation_abort_timeout = positive()?
                }
                "initial-pod-backoff" => t.initial_pod_backoff = positive()?,
                "max-pod-backoff" => t.max_pod_backoff = positive()?,
                "http-handler-timeout" => t.http_handler_timeout = positive()?,
                "http-bind-interval" => t.http_bind_interval = positive()?,
                "refuse-seconds" => {
                    t.refuse_seconds = value
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && (0.0..=31_536_000.0).contains(v))
                        .ok_or_else(|| {
                            bad("must be a number of seconds from 0 to 31536000".into())
                        })?
                }
                _ => {
                    return Err(IniError::UnknownKey {
                        path: path.to_owned(),
                        key: key.to_owned(),
                        known: KEYS.join(", "),
                    });
                }
            }
        }
    }
    if t.max_pod_backoff < t.initial_pod_backoff {
        return Err(IniError::Value {
            path: path.to_owned(),
            key: "max-pod-backoff".into(),
            value: duration::format(t.max_pod_backoff),
            problem: format!(
                "must not be less than initial-pod-backoff ({})",
                duration::format(t.initial_pod_backoff)
            ),
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_with_its_value() {
        let text = "[scheduler]\n\
            offer-ttl = 7s\noffer-linger-ttl = 3m\nlistener-delay = 500ms\nupdates-backlog = 100\n\
            framework-id-refresh-interval = 10s\ninitial-implicit-reconciliation-delay = 1s\n\
            explicit-reconciliation-max-backoff = 1m\nexplicit-reconciliation-abort-timeout = 45s\n\
            initial-pod-backoff = 2s\nmax-pod-backoff = 30s\nhttp-handler-timeout = 3s\n\
            http-bind-interval = 1s\nrefuse-seconds = 2.5\n";
        let t = parse("f.ini", text).unwrap();
        assert_eq!(t.offer_ttl, Duration::from_secs(7));
        assert_eq!(t.offer_linger_ttl, Duration::from_secs(180));
        assert_eq!(t.listener_delay, Duration::from_millis(500));
        assert_eq!(t.updates_backlog, 100);
        assert_eq!(t.framework_id_refresh_interval, Duration::from_secs(10));
        assert_eq!(t.initial_implicit_reconciliation_delay, Duration::from_secs(1));
        assert_eq!(t.explicit_reconciliation_max_backoff, Duration::from_secs(60));
        assert_eq!(t.explicit_reconciliation_abort_timeout, Duration::from_secs(45));
        assert_eq!(t.initial_pod_backoff, Duration::from_secs(2));
        assert_eq!(t.max_pod_backoff, Duration::from_secs(30));
        assert_eq!(t.http_handler_timeout, Duration::from_secs(3));
        assert_eq!(t.http_bind_interval, Duration::from_secs(1));
        assert_eq!(t.refuse_seconds, 2.5);
        assert_eq!(KEYS.len(), 13);
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(parse("f", "").unwrap(), Tuning::default());
        assert_eq!(parse("f", "[scheduler]\n# comment\n").unwrap(), Tuning::default());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("f.ini", "[scheduler]\ninfo-name = x\n").unwrap_err().to_string();
        assert!(e.contains("unknown key \"info-name\""), "{e}");
        assert!(e.contains("offer-ttl"), "{e}");
        let e = parse("f.ini", "[scheduler]\noffer-ttl = soon\n").unwrap_err().to_string();
        assert!(e.starts_with("f.ini: [scheduler] offer-ttl = \"soon\""), "{e}");
        let e = parse("f.ini", "[scheduler]\noffer-ttl = 0s\n").unwrap_err().to_string();
        assert!(e.contains("greater than zero"), "{e}");
        let e = parse("f.ini", "[scheduler]\nrefuse-seconds = -1\n").unwrap_err().to_string();
        assert!(e.contains("refuse-seconds"), "{e}");
        let e = parse("f.ini", "[scheduler]\nupdates-backlog = many\n").unwrap_err().to_string();
        assert!(e.contains("updates-backlog"), "{e}");
        let e = parse("f.ini", "[other]\nx = 1\n").unwrap_err().to_string();
        assert!(e.contains("unknown section \"other\""), "{e}");
        let e = parse("f.ini", "offer-ttl = 5s\n").unwrap_err().to_string();
        assert!(e.contains("unknown section \"\""), "{e}");
        let e = parse("f.ini", "[scheduler]\noffer-ttl = 1s\noffer-ttl = 2s\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than once"), "{e}");
        let e = parse("f.ini", "[scheduler]\ninitial-pod-backoff = 10s\nmax-pod-backoff = 5s\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max-pod-backoff"), "{e}");
    }
}
