//! Binaries from a URL for native containers, cached by checksum.
//!
//! A pod annotation `native.km.io/url.<container>: <url>` makes the
//! container's binary the file at that URL (http:// or file://), and
//! `native.km.io/sha256.<container>: <hex>` pins its SHA-256. Files are kept
//! in `<root>/cache/sha256/<hex>`; a pinned binary already in the cache
//! starts without any download, an unpinned one is cached under the
//! SHA-256 of its URL (`<root>/cache/url/<hex>`), so it is fetched once.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Annotation prefix naming a container's binary URL.
pub const ANNOTATION_URL_PREFIX: &str = "native.km.io/url.";
/// Annotation prefix pinning a container's binary SHA-256.
pub const ANNOTATION_SHA256_PREFIX: &str = "native.km.io/sha256.";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Returns the path of the cached binary for `url`, fetching it if needed.
pub(crate) async fn fetch(cache: &Path, url: &str, sha256: Option<&str>) -> Result<PathBuf> {
    let pull_err = |message: String| Error::ImagePull { image: url.to_owned(), message };
    let sha256 = sha256.map(str::to_ascii_lowercase);
    let target = match &sha256 {
        Some(sum) => {
            if sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(pull_err(format!("sha256 {sum:?} is not 64 hex digits")));
            }
            cache.join("sha256").join(sum)
        }
        None => cache.join("url").join(hex(&Sha256::digest(url.as_bytes()))),
    };
    if target.is_file() {
        return Ok(target);
    }
    let dir = target.parent().unwrap_or(cache).to_owned();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut hasher = Sha256::new();
    if let Some(path) = url.strip_prefix("file://") {
        let bytes =
            tokio::fs::read(path).await.map_err(|e| pull_err(format!("reading {path}: {e}")))?;
        hasher.update(&bytes);
        tmp.write_all(&bytes).map_err(|e| Error::io(tmp.path(), e))?;
    } else if url.starts_with("http://") {
        let resp = reqwest::get(url).await.map_err(|e| pull_err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(pull_err(format!("HTTP {}", resp.status())));
        }
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| pull_err(e.to_string()))?;
            hasher.update(&chunk);
            tmp.write_all(&chunk).map_err(|e| Error::io(tmp.path(), e))?;
        }
    } else {
        return Err(pull_err("only http:// and file:// URLs are supported".into()));
    }
    let got = hex(&hasher.finalize());
    if let Some(want) = &sha256
        && &got != want
    {
        return Err(pull_err(format!("sha256 mismatch: expected {want}, got {got}")));
    }
    let file = tmp.as_file();
    file.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(tmp.path(), e))?;
    file.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&target).map_err(|e| Error::io(&target, e.error))?;
    Ok(target)
}
