//! `--mesos-master`: where the Mesos masters are.
//!
//! Accepted forms: `host:port`, a comma list of them, `master@host:port` (the libprocess form),
//! `http://host:port` / `https://host:port` URLs, and `file:///path` whose content is one of
//! these. A non-leading master redirects to the leader, so any master of the cluster will do;
//! with several, the scheduler moves to the next one when a master cannot be reached.
//! ZooKeeper detection (`zk://`) is refused: it needs ZooKeeper's own protocol, and every Mesos
//! master since 1.0 answers the v1 API and redirects to the leader.

use url::Url;

/// A `--mesos-master` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterSpecError {
    /// `zk://…`.
    #[error(
        "--mesos-master {0:?}: ZooKeeper master detection (zk://) is not supported; list the masters as host:port[,host:port] or http(s) URLs instead (non-leading masters redirect to the leader)"
    )]
    ZooKeeper(String),
    /// An entry that is neither host:port nor a URL.
    #[error("--mesos-master: {entry:?} is not host:port or an http(s) URL: {problem}")]
    Entry {
        /// The entry.
        entry: String,
        /// What is wrong.
        problem: String,
    },
    /// `file://` that cannot be read.
    #[error("--mesos-master: cannot read {path}: {problem}")]
    File {
        /// Path.
        path: String,
        /// What went wrong.
        problem: String,
    },
    /// Nothing given.
    #[error("--mesos-master is empty")]
    Empty,
}

/// Parses `--mesos-master` into master base URLs (`http://host:port`), in order.
pub fn parse(spec: &str) -> Result<Vec<Url>, MasterSpecError> {
    parse_depth(spec, 0)
}

fn parse_depth(spec: &str, depth: u8) -> Result<Vec<Url>, MasterSpecError> {
    let spec = spec.trim();
    if spec.starts_with("zk://") {
        return Err(MasterSpecError::ZooKeeper(spec.to_owned()));
    }
    if let Some(path) = spec.strip_prefix("file://") {
        if depth > 0 {
            return Err(MasterSpecError::File {
                path: path.to_owned(),
                problem: "a file may not point to another file".into(),
            });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| MasterSpecError::File { path: path.to_owned(), problem: e.to_string() })?;
        return parse_depth(&text, depth + 1);
    }
    let mut out = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        out.push(parse_entry(entry)?);
    }
    if out.is_empty() {
        return Err(MasterSpecError::Empty);
    }
    Ok(out)
}

fn parse_entry(entry: &str) -> Result<Url, MasterSpecError> {
    let bad = |problem: &str| MasterSpecError::Entry {
        entry: entry.to_owned(),
        problem: problem.to_owned(),
    };
    if entry.starts_with("zk://") {
        return Err(MasterSpecError::ZooKeeper(entry.to_owned()));
    }
    let with_scheme = if entry.contains("://") {
        entry.to_owned()
    } else {
        let hostport = entry.strip_prefix("master@").unwrap_or(entry);
        format!("http://{hostport}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !entry.contains("://") && url.port().is_none() {
        return Err(bad("no port (Mesos masters listen on 5050 by default: host:5050)"));
    }
    let mut base = url.clone();
    base.set_path("");
    base.set_query(None);
    base.set_fragment(None);
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(spec: &str) -> Vec<String> {
        parse(spec).unwrap().into_iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn every_accepted_form() {
        assert_eq!(urls("localhost:5050"), vec!["http://localhost:5050/"]);
        assert_eq!(urls("master@10.0.0.1:5050"), vec!["http://10.0.0.1:5050/"]);
        assert_eq!(urls("m1:5050, m2:5051"), vec!["http://m1:5050/", "http://m2:5051/"]);
        assert_eq!(urls("https://mesos.example:443/"), vec!["https://mesos.example/"]);
        assert_eq!(urls("http://127.0.0.1:5050/master/api"), vec!["http://127.0.0.1:5050/"]);
    }

    #[test]
    fn zookeeper_is_refused_with_advice() {
        let e = parse("zk://z1:2181,z2:2181/mesos").unwrap_err().to_string();
        assert!(e.contains("ZooKeeper") && e.contains("host:port"), "{e}");
    }

    #[test]
    fn bad_entries_say_why() {
        assert!(parse("").is_err());
        assert!(parse("localhost").unwrap_err().to_string().contains("no port"));
        assert!(parse("ftp://x:1").unwrap_err().to_string().contains("scheme"));
        assert!(parse("a:b:c").is_err());
    }

    #[test]
    fn file_spec_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("masters");
        std::fs::write(&f, "m1:5050,m2:5050\n").unwrap();
        assert_eq!(urls(&format!("file://{}", f.display())).len(), 2);
        let e = parse("file:///does/not/exist").unwrap_err().to_string();
        assert!(e.contains("cannot read /does/not/exist"), "{e}");
    }
}
