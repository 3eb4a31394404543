//! Command-line flags ([`Args`]) and their validated form ([`Config`]).
//!
//! Validation happens before the podmaster joins the election and touches
//! only the file system: etcd endpoints are checked for form (no connection
//! is made), the source file must be a readable file, the dest directory must
//! accept a new file, and TLS files must be readable.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Identity, TlsOptions};

use crate::elector::Timing;
use crate::manifest;

/// The smallest `--ttl-secs`: etcd grants no lease shorter than about 1.5 s
/// with its default election timeout, and fencing needs one second of margin.
pub const MIN_TTL_SECS: u64 = 2;

/// Command-line flags of `km podmaster` (those of the original podmaster,
/// plus etcd TLS).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// etcd client endpoints, comma separated: `http://host:port`,
    /// `https://host:port` or `host:port`.
    #[arg(long, value_name = "URLS", value_delimiter = ',', required = true)]
    pub etcd_servers: Vec<String>,

    /// The etcd key to hold while master (e.g. `scheduler`).
    #[arg(long, required = true)]
    pub key: String,

    /// The value stored under the key while we hold it [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub whoami: Option<String>,

    /// The manifest to copy while master.
    #[arg(long, value_name = "PATH", required = true)]
    pub source_file: PathBuf,

    /// Where to copy it (a file in the kubelet's manifest directory).
    #[arg(long, value_name = "PATH", required = true)]
    pub dest_file: PathBuf,

    /// How often a standby looks at the key: `5s`, `500ms`, `1m`, or plain
    /// seconds (`5`). A master renews at this pace too, or faster if the TTL
    /// demands it.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_sleep)]
    pub sleep: Duration,

    /// The TTL of the etcd lease under which the key is held, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub ttl_secs: u64,

    /// CA certificate (PEM) to verify the etcd servers with; turns on TLS.
    #[arg(long, value_name = "PATH")]
    pub etcd_cafile: Option<PathBuf>,

    /// Client certificate (PEM) for etcd; needs --etcd-keyfile.
    #[arg(long, value_name = "PATH")]
    pub etcd_certfile: Option<PathBuf>,

    /// Client key (PEM) for etcd; needs --etcd-certfile.
    #[arg(long, value_name = "PATH")]
    pub etcd_keyfile: Option<PathBuf>,
}

/// Why the flags were rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--etcd-servers names no endpoint")]
    NoEtcdServers,
    #[error("invalid etcd URL {url:?}: {reason}")]
    EtcdUrl { url: String, reason: String },
    #[error("--key must not be empty")]
    EmptyKey,
    #[error("--whoami must not be empty")]
    EmptyWhoami,
    #[error("cannot determine the host name (pass --whoami): {0}")]
    Hostname(io::Error),
    #[error("--ttl-secs must be at least {MIN_TTL_SECS}, got {0}")]
    TtlTooShort(u64),
    #[error("source file {}: {source}", path.display())]
    SourceFile { path: PathBuf, source: io::Error },
    #[error("source file {} is not a regular file", path.display())]
    SourceNotAFile { path: PathBuf },
    #[error("dest file {} is a directory", path.display())]
    DestIsADirectory { path: PathBuf },
    #[error("dest directory {} is not writable: {source}", dir.display())]
    DestDirNotWritable { dir: PathBuf, source: io::Error },
    #[error("--etcd-certfile and --etcd-keyfile must be given together")]
    TlsIdentityIncomplete,
    #[error("TLS to etcd needs --etcd-cafile (system roots are not used)")]
    TlsWithoutCa,
    #[error("cannot read {flag} {}: {source}", path.display())]
    TlsFile { flag: &'static str, path: PathBuf, source: io::Error },
}

/// A validated podmaster configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd endpoints as full URLs (`http://…` or, with TLS, `https://…`).
    pub endpoints: Vec<String>,
    /// TLS settings for etcd, if any TLS flag or an `https://` URL was given.
    pub tls: Option<TlsOptions>,
    pub key: String,
    pub whoami: String,
    pub source: PathBuf,
    pub dest: PathBuf,
    pub timing: Timing,
}

impl Config {
    /// Validates the flags; see the module docs for what is checked.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let tls = tls_options(&args)?;
        let wants_tls = tls.is_some();
        let endpoints = parse_endpoints(&args.etcd_servers, wants_tls)?;
        let tls = match tls {
            Some(tls) => Some(tls),
            // An https:// URL without --etcd-cafile.
            None if endpoints.iter().any(|e| e.starts_with("https://")) => {
                return Err(ConfigError::TlsWithoutCa);
            }
            None => None,
        };

        if args.key.is_empty() {
            return Err(ConfigError::EmptyKey);
        }
        let whoami = match args.whoami {
            Some(name) if name.is_empty() => return Err(ConfigError::EmptyWhoami),
            Some(name) => name,
            None => hostname()?,
        };
        if args.ttl_secs < MIN_TTL_SECS {
            return Err(ConfigError::TtlTooShort(args.ttl_secs));
        }
        check_source(&args.source_file)?;
        check_dest(&args.dest_file)?;

        Ok(Config {
            endpoints,
            tls,
            key: args.key,
            whoami,
            source: args.source_file,
            dest: args.dest_file,
            timing: Timing { sleep: args.sleep, ttl: Duration::from_secs(args.ttl_secs) },
        })
    }

    /// The bound on one exchange with etcd (the driver shortens it further
    /// to a master's fencing deadline): one `--sleep`, at least one second.
    pub fn request_timeout(&self) -> Duration {
        self.timing.sleep.max(Duration::from_secs(1))
    }
}

/// Parses `--sleep`: a plain number of seconds, or a duration with units as
/// understood by `humantime` (`500ms`, `5s`, `1m30s`). Zero is rejected.
pub fn parse_sleep(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let duration = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>().map(Duration::from_secs).map_err(|e| e.to_string())?
    } else {
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 5s, 500ms or 5)"))?
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// Normalises the endpoints to full URLs; with `tls`, `host:port` becomes
/// `https://host:port` and `http://` is refused.
pub fn parse_endpoints(urls: &[String], tls: bool) -> Result<Vec<String>, ConfigError> {
    let endpoints: Vec<String> = urls
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .map(|u| parse_endpoint(u, tls))
        .collect::<Result<_, _>>()?;
    if endpoints.is_empty() {
        return Err(ConfigError::NoEtcdServers);
    }
    Ok(endpoints)
}

fn parse_endpoint(url: &str, tls: bool) -> Result<String, ConfigError> {
    let bad =
        |reason: &str| ConfigError::EtcdUrl { url: url.to_owned(), reason: reason.to_owned() };
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => ("http", rest),
        Some(("https", rest)) => ("https", rest),
        Some((other, _)) => {
            return Err(bad(&format!("unsupported scheme {other:?}, expected http or https")));
        }
        None => (if tls { "https" } else { "http" }, url),
    };
    if scheme == "http" && tls {
        return Err(bad(
            "etcd TLS flags were given but the URL is http://; use https:// or host:port",
        ));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(bad("expected scheme://host:port without path, query or user"));
    }
    let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err(bad(&format!("invalid port {port:?}")));
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    if !host_ok {
        return Err(bad(&format!("invalid host {host:?}")));
    }
    Ok(format!("{scheme}://{host}:{port}"))
}

fn tls_options(args: &Args) -> Result<Option<TlsOptions>, ConfigError> {
    let read = |flag: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| ConfigError::TlsFile {
            flag,
            path: path.to_owned(),
            source,
        })
    };
    let identity = match (&args.etcd_certfile, &args.etcd_keyfile) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            Some(Identity::from_pem(read("--etcd-certfile", cert)?, read("--etcd-keyfile", key)?))
        }
        _ => return Err(ConfigError::TlsIdentityIncomplete),
    };
    let Some(ca) = &args.etcd_cafile else {
        return match identity {
            Some(_) => Err(ConfigError::TlsWithoutCa),
            None => Ok(None),
        };
    };
    let mut tls =
        TlsOptions::new().ca_certificate(Certificate::from_pem(read("--etcd-cafile", ca)?));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Ok(Some(tls))
}

fn hostname() -> Result<String, ConfigError> {
    let name =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(ConfigError::Hostname)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(ConfigError::Hostname(io::Error::other(
            "the kernel reports an empty host name",
        )));
    }
    Ok(name.to_owned())
}

fn check_source(path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|source| ConfigError::SourceFile { path: path.to_owned(), source })?;
    if !meta.is_file() {
        return Err(ConfigError::SourceNotAFile { path: path.to_owned() });
    }
    std::fs::File::open(path)
        .map_err(|source| ConfigError::SourceFile { path: path.to_owned(), source })?;
    Ok(())
}

fn check_dest(path: &Path) -> Result<(), ConfigError> {
    if path.is_dir() {
        return Err(ConfigError::DestIsADirectory { path: path.to_owned() });
    }
    manifest::probe_dest_dir(path).map_err(|source| ConfigError::DestDirNotWritable {
        dir: manifest::dest_dir(path).to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
