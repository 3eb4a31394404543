//! Errors of the pod runtime. Each variant that can stop a container from
//! starting maps to the reason Kubernetes shows in `containerStatuses`
//! ([`Error::reason`]).

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod manifest cannot be run as written.
    #[error("invalid pod {pod}: {reason}")]
    InvalidPod { pod: String, reason: String },

    /// An image is absent and the pull policy forbids pulling it.
    #[error("image {image:?} is not present and imagePullPolicy is Never")]
    ImageNeverPull { image: String },

    /// Pulling an image failed (there is no registry access here).
    #[error("cannot pull image {image:?}: {message}")]
    ImagePull { image: String, message: String },

    /// Environment or volume sources that cannot be resolved.
    #[error("container {container:?}: {message}")]
    Config { container: String, message: String },

    /// The native runtime could not find or execute the container's binary.
    #[error("container {container:?}: cannot start {binary:?}: {message}")]
    Exec { container: String, binary: String, message: String },

    /// A file or directory of a sandbox, cgroup or log.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The Docker engine refused or failed a request.
    #[error("docker: {what}: {source}")]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },

    /// No container or sandbox with this id is known.
    #[error("no such container {0:?}")]
    NotFound(String),

    /// Anything else the runtime reports in words.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The `reason` Kubernetes gives a container that failed to start with
    /// this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::ImageNeverPull { .. } => "ErrImageNeverPull",
            Error::ImagePull { .. } => "ErrImagePull",
            Error::Config { .. } | Error::InvalidPod { .. } => "CreateContainerConfigError",
            Error::Exec { .. } => "StartError",
            _ => "CreateContainerError",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
