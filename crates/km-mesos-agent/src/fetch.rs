//! The fetcher: puts `CommandInfo.uris` into a sandbox before the command
//! starts, as `mesos-fetcher` does.
//!
//! - `file:///path`, `/path` (and relative paths, against the agent's cwd):
//!   copied; `http://…`: downloaded with reqwest (no TLS in km's build, so
//!   `https://` is refused with a clear error).
//! - `output_file` names the result, else the last path segment. It must stay
//!   inside the sandbox: an absolute path, a `..` component, or a symlink
//!   already in the sandbox that leads out of it fails the fetch.
//! - Downloads and copies are streamed to their file, never held in memory,
//!   and may be at most `--fetcher_max_size` bytes; a bigger one fails the
//!   fetch and its partial file is removed.
//! - `executable`: mode 0755 (and no extraction, as in Mesos).
//! - `extract` (default true): `.tar`, `.tar.gz`, `.tgz` are unpacked into
//!   the sandbox with the `tar` and `flate2` crates; `.zip` is unpacked by
//!   the `unzip` program, which is what Mesos's fetcher runs too. The
//!   archive itself stays in the sandbox, as with Mesos.

mod cache;

use std::path::{Component, Path, PathBuf};

use cache::CacheError;
pub use cache::{CacheSize, FetchCache, Placed};

use km_mesos::v1::command_info::Uri;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A URI that could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("failed to fetch '{uri}': {problem}")]
pub struct FetchError {
    /// The URI as given.
    pub uri: String,
    /// What went wrong.
    pub problem: String,
}

fn fail(uri: &Uri, problem: impl std::fmt::Display) -> FetchError {
    FetchError { uri: uri.value.clone(), problem: problem.to_string() }
}

/// The file name a URI gets in the sandbox.
pub fn basename(uri: &Uri) -> Option<String> {
    if let Some(name) = uri.output_file.as_deref().filter(|n| !n.is_empty()) {
        return Some(name.to_owned());
    }
    let v = uri.value.split(['?', '#']).next().unwrap_or("");
    let name = v.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_owned())
}

/// What kind of archive a file name denotes, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// `.tar`.
    Tar,
    /// `.tar.gz`, `.tgz`.
    TarGz,
    /// `.zip`.
    Zip,
}

/// Recognises archives by extension.
pub fn archive_kind(name: &str) -> Option<Archive> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        Some(Archive::TarGz)
    } else if lower.ends_with(".tar") {
        Some(Archive::Tar)
    } else if lower.ends_with(".zip") {
        Some(Archive::Zip)
    } else {
        None
    }
}

/// Fetches every URI into `sandbox`, stopping at the first failure. No file written may be
/// larger than `max_size` bytes. URIs marked `cache` go through `cache` when there is one,
/// keyed by the command's `user` (empty when unset).
pub async fn fetch_all(
    client: &reqwest::Client,
    uris: &[Uri],
    sandbox: &Path,
    max_size: u64,
    cache: Option<(&FetchCache, &str)>,
) -> Result<(), FetchError> {
    for uri in uris {
        fetch_one(client, uri, sandbox, max_size, cache).await?;
    }
    Ok(())
}

async fn fetch_one(
    client: &reqwest::Client,
    uri: &Uri,
    sandbox: &Path,
    max_size: u64,
    cache: Option<(&FetchCache, &str)>,
) -> Result<(), FetchError> {
    let name =
        basename(uri).ok_or_else(|| fail(uri, "cannot tell a file name; set output_file"))?;
    if name.contains('/') && uri.output_file.is_none() {
        return Err(fail(uri, "bad file name"));
    }
    let (sandbox_owned, name_owned) = (sandbox.to_owned(), name.clone());
    let target = tokio::task::spawn_blocking(move || place(&sandbox_owned, &name_owned))
        .await
        .map_err(|e| fail(uri, e))?
        .map_err(|problem| fail(uri, problem))?;
    let mut placed = Placed::Copied;
    let cached = match cache.filter(|_| uri.cache == Some(true)) {
        Some((cache, user)) => match cache.fetch_into(client, uri, user, &target, max_size).await {
            Ok(how) => {
                placed = how;
                true
            }
            Err(CacheError::Source(e)) => return Err(e),
            Err(CacheError::Cache(problem)) => {
                tracing::warn!(uri = %uri.value, "fetcher cache: {problem}; fetching directly");
                false
            }
        },
        None => false,
    };
    if !cached {
        fetch_source(client, uri, &target, max_size).await?;
    }
    if uri.executable == Some(true) {
        // A link shares the cache entry's mode (0555), which stays as it is.
        if placed == Placed::Copied {
            use std::os::unix::fs::PermissionsExt as _;
            tokio::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                .await
                .map_err(|e| fail(uri, e))?;
        }
    } else if uri.extract.unwrap_or(true)
        && let Some(kind) = archive_kind(&name)
    {
        extract(uri, kind, &target, sandbox).await?;
    }
    Ok(())
}

/// Writes what `uri` names to `target` (downloaded or copied), at most `max_size` bytes;
/// on failure nothing half-written is left.
async fn fetch_source(
    client: &reqwest::Client,
    uri: &Uri,
    target: &Path,
    max_size: u64,
) -> Result<(), FetchError> {
    let value = uri.value.as_str();
    let written = if value.starts_with("http://") {
        download(client, uri, target, max_size).await
    } else if value.starts_with("https://") {
        return Err(fail(uri, "https is not supported by this agent (built without TLS)"));
    } else if let Some(rest) = value.strip_prefix("file://") {
        copy(uri, Path::new(rest), target, max_size).await
    } else if value.contains("://") {
        return Err(fail(uri, "unsupported URI scheme"));
    } else {
        copy(uri, Path::new(value), target, max_size).await
    };
    if written.is_err() {
        let _ = tokio::fs::remove_file(target).await;
    }
    written
}

/// Where `name` (an `output_file` or a URI's last segment) goes in `sandbox`: the path of
/// the file to write, with the directories leading to it created. Refuses absolute names,
/// `..`, and anything that would leave the sandbox through a symlink already in it (from an
/// archive unpacked by an earlier URI, say); the message names the path.
pub fn place(sandbox: &Path, name: &str) -> Result<PathBuf, String> {
    let rel = Path::new(name);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "output file '{name}' leaves the sandbox: '..' is not allowed"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "output file '{name}' is an absolute path; it must be relative to the sandbox"
                ));
            }
        }
    }
    if parts.is_empty() {
        return Err(format!("output file '{name}' names no file"));
    }
    let root = std::fs::canonicalize(sandbox)
        .map_err(|e| format!("sandbox {}: {e}", sandbox.display()))?;
    let outside = |via: &Path| {
        format!(
            "output file '{name}' resolves outside the sandbox (through the symlink {})",
            via.display()
        )
    };
    let mut at = root.clone();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next = at.join(part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                // A symlink may stay in the sandbox; where it leads is checked, not assumed.
                let resolved = std::fs::canonicalize(&next).map_err(|_| outside(&next))?;
                if !resolved.starts_with(&root) {
                    return Err(outside(&next));
                }
                if !last && !resolved.is_dir() {
                    return Err(format!(
                        "output file '{name}': {} is not a directory",
                        next.display()
                    ));
                }
                at = resolved;
            }
            Ok(meta) => {
                if !last && !meta.is_dir() {
                    return Err(format!(
                        "output file '{name}': {} is not a directory",
                        next.display()
                    ));
                }
                at = next;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !last {
                    std::fs::create_dir(&next)
                        .map_err(|e| format!("creating {}: {e}", next.display()))?;
                }
                at = next;
            }
            Err(e) => return Err(format!("{}: {e}", next.display())),
        }
    }
    Ok(at)
}

/// Creates (or truncates) `target` for writing without following a symlink there: [`place`]
/// resolved every symlink, so one found now was put there since.
async fn create(uri: &Uri, target: &Path) -> Result<tokio::fs::File, FetchError> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(target)
        .await
        .map_err(|e| fail(uri, format!("{}: {e}", target.display())))
}

fn too_large(uri: &Uri, max_size: u64) -> FetchError {
    fail(uri, format!("larger than the fetcher's limit of {max_size} bytes (--fetcher_max_size)"))
}

async fn download(
    client: &reqwest::Client,
    uri: &Uri,
    target: &Path,
    max_size: u64,
) -> Result<(), FetchError> {
    let mut resp = client.get(&uri.value).send().await.map_err(|e| fail(uri, e))?;
    if !resp.status().is_success() {
        return Err(fail(uri, format!("HTTP {}", resp.status())));
    }
    if resp.content_length().is_some_and(|n| n > max_size) {
        return Err(too_large(uri, max_size));
    }
    let mut file = create(uri, target).await?;
    let mut written: u64 = 0;
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(uri, e))? {
        written = written.saturating_add(chunk.len() as u64);
        if written > max_size {
            return Err(too_large(uri, max_size));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| fail(uri, format!("{}: {e}", target.display())))?;
    }
    file.flush().await.map_err(|e| fail(uri, format!("{}: {e}", target.display())))
}

async fn copy(uri: &Uri, source: &Path, target: &Path, max_size: u64) -> Result<(), FetchError> {
    let from = tokio::fs::File::open(source)
        .await
        .map_err(|e| fail(uri, format!("{}: {e}", source.display())))?;
    let mut file = create(uri, target).await?;
    // One byte past the limit tells a file of exactly `max_size` from a bigger one.
    let mut limited = from.take(max_size.saturating_add(1));
    let n = tokio::io::copy(&mut limited, &mut file).await.map_err(|e| {
        fail(uri, format!("copying {} to {}: {e}", source.display(), target.display()))
    })?;
    if n > max_size {
        return Err(too_large(uri, max_size));
    }
    file.flush().await.map_err(|e| fail(uri, format!("{}: {e}", target.display())))
}

async fn extract(uri: &Uri, kind: Archive, archive: &Path, into: &Path) -> Result<(), FetchError> {
    match kind {
        Archive::Zip => {
            let out = tokio::process::Command::new("unzip")
                .arg("-o")
                .arg("-d")
                .arg(into)
                .arg(archive)
                .output()
                .await
                .map_err(|e| fail(uri, format!("cannot run unzip: {e}")))?;
            if !out.status.success() {
                return Err(fail(
                    uri,
                    format!("unzip failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
                ));
            }
            Ok(())
        }
        Archive::Tar | Archive::TarGz => {
            let (archive, into): (PathBuf, PathBuf) = (archive.to_owned(), into.to_owned());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let file = std::fs::File::open(&archive)?;
                if kind == Archive::TarGz {
                    tar::Archive::new(flate2::read::GzDecoder::new(file)).unpack(&into)
                } else {
                    tar::Archive::new(file).unpack(&into)
                }
            })
            .await
            .map_err(|e| fail(uri, e))?
            .map_err(|e| fail(uri, format!("cannot extract: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 20;

    fn uri(v: &str) -> Uri {
        Uri { value: v.into(), ..Uri::default() }
    }

    #[test]
    fn names_and_archives() {
        assert_eq!(basename(&uri("http://h/a/b.tgz?x=1")).as_deref(), Some("b.tgz"));
        assert_eq!(basename(&uri("/x/y/")).as_deref(), Some("y"));
        assert_eq!(
            basename(&Uri { output_file: Some("out".into()), ..uri("http://h/") }).as_deref(),
            Some("out")
        );
        assert_eq!(basename(&uri("http://h/")).as_deref(), Some("h"));
        assert_eq!(archive_kind("a.TAR.GZ"), Some(Archive::TarGz));
        assert_eq!(archive_kind("a.tar"), Some(Archive::Tar));
        assert_eq!(archive_kind("a.zip"), Some(Archive::Zip));
        assert_eq!(archive_kind("a.gz"), None);
    }

    #[tokio::test]
    async fn copies_files_sets_modes_and_unpacks_tgz() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        // A .tar.gz holding hello.txt.
        let tgz = src.join("bundle.tar.gz");
        {
            let enc = flate2::write::GzEncoder::new(
                std::fs::File::create(&tgz).unwrap(),
                flate2::Compression::fast(),
            );
            let mut b = tar::Builder::new(enc);
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
            b.into_inner().unwrap().finish().unwrap();
        }
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        let uris = vec![
            Uri {
                executable: Some(true),
                ..uri(&format!("file://{}", src.join("run.sh").display()))
            },
            uri(&tgz.display().to_string()),
            Uri {
                output_file: Some("renamed".into()),
                ..uri(&src.join("run.sh").display().to_string())
            },
        ];
        fetch_all(&reqwest::Client::new(), &uris, &sandbox, MAX, None).await.unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sandbox.join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(std::fs::read_to_string(sandbox.join("hello.txt")).unwrap(), "hello");
        assert!(sandbox.join("bundle.tar.gz").exists());
        assert!(sandbox.join("renamed").exists());

        let err = fetch_all(&reqwest::Client::new(), &[uri("/no/such/file")], &sandbox, MAX, None)
            .await
            .unwrap_err();
        assert_eq!(err.uri, "/no/such/file");
        assert!(err.to_string().contains("/no/such/file"), "{err}");
        let err = fetch_all(&reqwest::Client::new(), &[uri("https://x/y")], &sandbox, MAX, None)
            .await
            .unwrap_err();
        assert!(err.problem.contains("https"));
    }

    #[tokio::test]
    async fn downloads_over_http_and_unzips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("z.txt"), "zipped").unwrap();
        let zipped = std::process::Command::new("zip")
            .current_dir(&src)
            .args(["-q", "bundle.zip", "z.txt"])
            .status()
            .is_ok_and(|s| s.success());
        let zip_bytes = std::fs::read(src.join("bundle.zip")).unwrap_or_default();
        let app = axum::Router::new()
            .route("/files/hello.txt", axum::routing::get(|| async { "hello over http" }))
            .route("/files/bundle.zip", axum::routing::get(move || async move { zip_bytes }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        let client = reqwest::Client::new();
        fetch_all(&client, &[uri(&format!("{base}/files/hello.txt"))], &sandbox, MAX, None)
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(sandbox.join("hello.txt")).unwrap(), "hello over http");
        if zipped {
            fetch_all(&client, &[uri(&format!("{base}/files/bundle.zip"))], &sandbox, MAX, None)
                .await
                .unwrap();
            assert_eq!(std::fs::read_to_string(sandbox.join("z.txt")).unwrap(), "zipped");
        }
        let missing = format!("{base}/files/nope");
        let err = fetch_all(&client, &[uri(&missing)], &sandbox, MAX, None).await.unwrap_err();
        assert_eq!(err.uri, missing);
        assert!(err.problem.contains("404"), "{err}");
    }

    #[tokio::test]
    async fn output_files_stay_in_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("payload");
        std::fs::write(&src, "payload").unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), "keep").unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        // A symlink out of the sandbox (as an archive could have unpacked), one to a file
        // outside, and one that stays inside.
        std::os::unix::fs::symlink(&outside, sandbox.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.join("precious"), sandbox.join("file-out")).unwrap();
        std::fs::create_dir(sandbox.join("sub")).unwrap();
        std::os::unix::fs::symlink(sandbox.join("sub"), sandbox.join("in")).unwrap();
        let to = |output: &str| Uri {
            output_file: Some(output.into()),
            ..uri(&src.display().to_string())
        };
        let client = reqwest::Client::new();
        let absolute = outside.join("abs").display().to_string();
        for (bad, says) in [
            (absolute.as_str(), "is an absolute path"),
            ("../escaped", "'..' is not allowed"),
            ("a/../../escaped", "'..' is not allowed"),
            ("out/escaped", "resolves outside the sandbox"),
            ("out/new/escaped", "resolves outside the sandbox"),
            ("file-out", "resolves outside the sandbox"),
            (".", "names no file"),
        ] {
            let err = fetch_all(&client, &[to(bad)], &sandbox, MAX, None).await.unwrap_err();
            assert!(err.problem.contains(&format!("output file '{bad}'")), "{bad}: {err}");
            assert!(err.problem.contains(says), "{bad}: {err}");
        }
        assert!(!dir.path().join("escaped").exists());
        assert!(!dir.path().join("abs").exists() && !outside.join("abs").exists());
        assert!(!outside.join("escaped").exists() && !outside.join("new").exists());
        assert_eq!(std::fs::read_to_string(outside.join("precious")).unwrap(), "keep");

        // Inside is fine, through new directories and symlinks that stay in.
        fetch_all(
            &client,
            &[to("deep/er/copy"), to("in/linked"), to("./plain")],
            &sandbox,
            MAX,
            None,
        )
        .await
        .unwrap();
        for written in ["deep/er/copy", "sub/linked", "plain"] {
            assert_eq!(std::fs::read_to_string(sandbox.join(written)).unwrap(), "payload");
        }
    }

    /// Serves `/exact` (`MAX` bytes), `/over` (`MAX + 1` bytes with a Content-Length) and
    /// `/endless` (a chunked body that never ends) on a loopback port.
    async fn size_server() -> String {
        use futures::StreamExt as _;
        let exact = vec![b'x'; MAX as usize];
        let over = vec![b'y'; MAX as usize + 1];
        let app = axum::Router::new()
            .route("/exact", axum::routing::get(move || async move { exact }))
            .route("/over", axum::routing::get(move || async move { over }))
            .route(
                "/endless",
                axum::routing::get(|| async {
                    let chunk = bytes::Bytes::from(vec![b'z'; 64 * 1024]);
                    let body = futures::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
                    axum::body::Body::from_stream(body)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    #[tokio::test]
    async fn downloads_and_copies_stop_at_the_size_limit_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        let base = size_server().await;
        let client = reqwest::Client::new();
        fetch_all(&client, &[uri(&format!("{base}/exact"))], &sandbox, MAX, None).await.unwrap();
        assert_eq!(std::fs::metadata(sandbox.join("exact")).unwrap().len(), MAX);

        for name in ["over", "endless"] {
            // The endless body would never be read whole: the fetch must end at the limit.
            let uris = [uri(&format!("{base}/{name}"))];
            let fetch = fetch_all(&client, &uris, &sandbox, MAX, None);
            let err = tokio::time::timeout(std::time::Duration::from_secs(60), fetch)
                .await
                .expect("the fetch ends")
                .unwrap_err();
            assert!(
                err.problem.contains("larger than the fetcher's limit of 1048576 bytes"),
                "{err}"
            );
            assert!(!sandbox.join(name).exists(), "{name}: a partial file is left");
        }

        // The same limit holds for local files.
        let big = dir.path().join("big.bin");
        std::fs::write(&big, vec![0u8; MAX as usize + 1]).unwrap();
        let err = fetch_all(&client, &[uri(&big.display().to_string())], &sandbox, MAX, None)
            .await
            .unwrap_err();
        assert!(err.problem.contains("--fetcher_max_size"), "{err}");
        assert!(!sandbox.join("big.bin").exists());
        fetch_all(&client, &[uri(&big.display().to_string())], &sandbox, MAX + 1, None)
            .await
            .unwrap();
        assert_eq!(std::fs::metadata(sandbox.join("big.bin")).unwrap().len(), MAX + 1);
    }
}
