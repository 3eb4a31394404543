//! The sandbox files API of a Mesos agent, which the Mesos web UI and CLI use to show a task's
//! stdout and stderr: `GET /files/browse?path=DIR` lists a directory, `GET /files/read?path=FILE
//! &offset=N&length=N` reads part of a file (offset -1 asks for the size). Only the sandboxes
//! (`<work_dir>/slaves/...`) are served: a path is refused unless it lies inside them both as
//! written and with every symlink resolved, so neither `..` nor a link a task made can reach
//! the rest of the machine.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::agent::Agent;

/// The most a read returns at once (Mesos: 16 pages).
pub(crate) const MAX_READ: u64 = 16 * 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FilesError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} is outside the sandboxes this agent serves")]
    Outside(String),
    #[error("File not found: {0}")]
    NotFound(String),
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let status = match self {
            FilesError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FilesError::Outside(_) => StatusCode::FORBIDDEN,
            FilesError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        (status, self.to_string()).into_response()
    }
}

/// The query parameter `name`, decoded.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The path as written, with `.` removed and `..` refused; it must be absolute and inside
/// `root`.
pub(crate) fn lexically_inside(root: &Path, requested: &str) -> Result<PathBuf, FilesError> {
    if requested.is_empty() {
        return Err(FilesError::BadRequest("Expecting 'path' to be present".into()));
    }
    let path = Path::new(requested);
    if !path.is_absolute() {
        return Err(FilesError::BadRequest(format!("{requested}: expected an absolute path")));
    }
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => clean.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => return Err(FilesError::Outside(requested.to_owned())),
            Component::Normal(n) => clean.push(n),
        }
    }
    if !clean.starts_with(root) {
        return Err(FilesError::Outside(requested.to_owned()));
    }
    Ok(clean)
}

/// The real path of a request, inside the real sandbox root.
async fn confine(agent: &Agent, requested: Option<String>) -> Result<PathBuf, FilesError> {
    let requested =
        requested.ok_or_else(|| FilesError::BadRequest("Expecting 'path' to be present".into()))?;
    let root = agent.cfg.work_dir.join("slaves");
    let root = tokio::fs::canonicalize(&root).await.unwrap_or(root);
    let lexical = lexically_inside(&root, &requested).or_else(|e| {
        // The work directory as configured (a relative or linked --work_dir) is inside too.
        lexically_inside(&agent.cfg.work_dir.join("slaves"), &requested).map_err(|_| e)
    })?;
    let real = tokio::fs::canonicalize(&lexical)
        .await
        .map_err(|_| FilesError::NotFound(requested.clone()))?;
    if !real.starts_with(&root) {
        return Err(FilesError::Outside(requested));
    }
    Ok(real)
}

/// `drwxr-xr-x`, as `ls -l` and Mesos write a mode.
pub(crate) fn mode_string(mode: u32, dir: bool, link: bool) -> String {
    let kind = if dir {
        'd'
    } else if link {
        'l'
    } else {
        '-'
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |g| g.name)
}

/// `GET /files/browse?path=DIR`.
pub(crate) async fn browse(State(agent): State<Arc<Agent>>, uri: axum::http::Uri) -> Response {
    match browse_dir(&agent, param(uri.query(), "path")).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn browse_dir(
    agent: &Agent,
    requested: Option<String>,
) -> Result<serde_json::Value, FilesError> {
    use std::os::unix::fs::MetadataExt as _;
    let shown = requested.clone().unwrap_or_default();
    let dir = confine(agent, requested).await?;
    let meta = tokio::fs::metadata(&dir).await.map_err(|_| FilesError::NotFound(shown.clone()))?;
    if !meta.is_dir() {
        return Err(FilesError::BadRequest(format!("{shown} is not a directory")));
    }
    let mut entries =
        tokio::fs::read_dir(&dir).await.map_err(|_| FilesError::NotFound(shown.clone()))?;
    let mut out = Vec::new();
    while let Ok(Some(e)) = entries.next_entry().await {
        let Ok(m) = tokio::fs::symlink_metadata(e.path()).await else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        out.push(json!({
            "path": format!("{}/{name}", shown.trim_end_matches('/')),
            "nlink": m.nlink(),
            "size": m.len(),
            "mtime": m.mtime() as f64,
            "mode": mode_string(m.mode(), m.is_dir(), m.file_type().is_symlink()),
            "uid": user_name(m.uid()),
            "gid": group_name(m.gid()),
        }));
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(serde_json::Value::Array(out))
}

/// `GET /files/read?path=FILE&offset=N&length=N`.
pub(crate) async fn read(State(agent): State<Arc<Agent>>, uri: axum::http::Uri) -> Response {
    let q = uri.query();
    let number = |name: &str| -> Result<Option<i64>, FilesError> {
        param(q, name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    FilesError::BadRequest(format!("Failed to parse {name}: {v:?} is not a number"))
                })
            })
            .transpose()
    };
    let result = async {
        let offset = number("offset")?;
        let length = number("length")?;
        read_file(&agent, param(q, "path"), offset, length).await
    };
    match result.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// How much to read: (start, bytes), or None for "the size only" (offset -1).
pub(crate) fn span(
    offset: Option<i64>,
    length: Option<i64>,
    size: u64,
) -> Result<Option<(u64, u64)>, FilesError> {
    let offset = offset.unwrap_or(0);
    if offset == -1 {
        return Ok(None);
    }
    let offset = u64::try_from(offset)
        .map_err(|_| FilesError::BadRequest("Negative offset provided".into()))?;
    let length = match length {
        None | Some(-1) => MAX_READ,
        Some(n) => u64::try_from(n)
            .map_err(|_| FilesError::BadRequest("Negative length provided".into()))?
            .min(MAX_READ),
    };
    let start = offset.min(size);
    Ok(Some((start, length.min(size - start))))
}

async fn read_file(
    agent: &Agent,
    requested: Option<String>,
    offset: Option<i64>,
    length: Option<i64>,
) -> Result<serde_json::Value, FilesError> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let shown = requested.clone().unwrap_or_default();
    let path = confine(agent, requested).await?;
    let meta = tokio::fs::metadata(&path).await.map_err(|_| FilesError::NotFound(shown.clone()))?;
    if meta.is_dir() {
        return Err(FilesError::BadRequest("Cannot read a directory".into()));
    }
    let size = meta.len();
    let Some((start, len)) = span(offset, length, size)? else {
        return Ok(json!({ "data": "", "offset": size }));
    };
    let mut file =
        tokio::fs::File::open(&path).await.map_err(|_| FilesError::NotFound(shown.clone()))?;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|_| FilesError::NotFound(shown.clone()))?;
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len).read_to_end(&mut buf).await.map_err(|_| FilesError::NotFound(shown))?;
    Ok(json!({ "data": String::from_utf8_lossy(&buf), "offset": start }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside_the_sandboxes_as_written() {
        let root = Path::new("/var/km/slaves");
        assert_eq!(
            lexically_inside(root, "/var/km/slaves/a/./b/stdout"),
            Ok(PathBuf::from("/var/km/slaves/a/b/stdout"))
        );
        assert!(matches!(
            lexically_inside(root, "/var/km/slaves/a/../../etc/passwd"),
            Err(FilesError::Outside(_))
        ));
        assert!(matches!(lexically_inside(root, "/etc/passwd"), Err(FilesError::Outside(_))));
        assert!(matches!(lexically_inside(root, "/var/km/slavesX"), Err(FilesError::Outside(_))));
        assert!(matches!(lexically_inside(root, "relative/x"), Err(FilesError::BadRequest(_))));
        assert!(matches!(lexically_inside(root, ""), Err(FilesError::BadRequest(_))));
    }

    #[test]
    fn reads_are_spans_of_at_most_sixteen_pages() {
        assert_eq!(span(None, None, 10), Ok(Some((0, 10))));
        assert_eq!(span(Some(4), Some(3), 10), Ok(Some((4, 3))));
        assert_eq!(span(Some(8), Some(5), 10), Ok(Some((8, 2))));
        assert_eq!(span(Some(20), None, 10), Ok(Some((10, 0))), "past the end: nothing");
        assert_eq!(span(Some(-1), None, 10), Ok(None), "-1: the size only");
        assert_eq!(span(None, None, 1 << 20), Ok(Some((0, MAX_READ))));
        assert!(span(Some(-2), None, 10).is_err());
        assert!(span(None, Some(-5), 10).is_err());
    }

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(0o755, true, false), "drwxr-xr-x");
        assert_eq!(mode_string(0o100644, false, false), "-rw-r--r--");
        assert_eq!(mode_string(0o777, false, true), "lrwxrwxrwx");
    }
}
