//! The one error type of the crate, and the ways a config file can be wrong.

use std::path::PathBuf;
use std::time::Duration;

/// Why the cloud provider could not be set up or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The config file could not be read.
    #[error("cannot read cloud config {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The config file was read but is not acceptable.
    #[error("cloud config {origin}: {problem}")]
    Config {
        /// The file's path, or a placeholder when text was parsed directly.
        origin: String,
        /// What is wrong with it.
        problem: ConfigProblem,
    },
    /// `--cloud-provider` names a provider km does not have.
    #[error("unknown cloud provider {0:?} (km knows: mesos)")]
    UnknownProvider(String),
    /// `--cloud-config` was given but no `--cloud-provider` to read it.
    #[error(
        "--cloud-config {} was given without --cloud-provider; set --cloud-provider=mesos \
         or drop --cloud-config",
        .0.display()
    )]
    ConfigWithoutProvider(PathBuf),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A request got no answer within `http-client-timeout`.
    #[error("{url} did not answer within {}", humanize(*.after))]
    Timeout {
        /// The endpoint.
        url: String,
        /// The configured `http-client-timeout`.
        after: Duration,
    },
    /// A request could not be sent, or its answer not read.
    #[error("request to {url} failed: {source}")]
    Http {
        /// The endpoint.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The master answered with a status other than the expected one.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the body (Mesos explains errors in plain text).
        body: String,
    },
    /// A redirect that could not be followed.
    #[error("cannot follow the redirect from {url}: {problem}")]
    Redirect {
        /// The endpoint that redirected.
        url: String,
        /// What was wrong with it.
        problem: String,
    },
    /// The body was not the document the endpoint should return.
    #[error("unexpected answer from {url}: {problem}")]
    Decode {
        /// The endpoint.
        url: String,
        /// What did not fit.
        problem: String,
    },
    /// Neither the operator API nor the legacy state endpoints gave an answer.
    #[error(
        "the master answers neither the operator API ({operator}) nor the legacy state endpoint ({legacy})"
    )]
    NoUsableApi {
        /// Why the operator API attempt failed.
        operator: Box<CloudError>,
        /// Why the legacy attempt failed.
        legacy: Box<CloudError>,
    },
    /// The master does not know an agent with this hostname.
    #[error("no Mesos agent has hostname {0:?}")]
    InstanceNotFound(String),
}

impl CloudError {
    /// The HTTP status, when the error is an unexpected answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            CloudError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What is wrong with a `mesos-cloud.conf`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// The text is not ini.
    #[error("not an ini file: {0}")]
    Syntax(String),
    /// A section other than `[mesos-cloud]`.
    #[error("unknown section [{0}] (the only section is [mesos-cloud])")]
    UnknownSection(String),
    /// A key before any section header.
    #[error("key {0:?} is outside a section (put it under [mesos-cloud])")]
    KeyOutsideSection(String),
    /// A key the section does not have.
    #[error(
        "unknown key {0:?} in [mesos-cloud] (known keys: mesos-master, http-client-timeout, \
         state-cache-ttl)"
    )]
    UnknownKey(String),
    /// A key given twice.
    #[error("key {0:?} is given more than once")]
    DuplicateKey(String),
    /// `mesos-master` points at ZooKeeper.
    #[error(
        "mesos-master = {0:?}: finding the leading master through ZooKeeper is not supported; \
         give the URL of a master instead (http://host:5050 or host:5050), any master of the \
         cluster will redirect to the leader"
    )]
    ZooKeeper(String),
    /// A value that does not parse.
    #[error("{key} = {value:?}: {problem}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
