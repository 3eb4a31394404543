//! The fetcher: puts `CommandInfo.uris` into a sandbox before the command
//! starts, as `mesos-fetcher` does.
//!
//! - `file:///path`, `/path` (and relative paths, against the agent's cwd):
//!   copied; `http://…`: downloaded with reqwest (no TLS in km's build, so
//!   `https://` is refused with a clear error).
//! - `output_file` names the result, else the last path segment.
//! - `executable`: mode 0755 (and no extraction, as in Mesos).
//! - `extract` (default true): `.tar`, `.tar.gz`, `.tgz` are unpacked into
//!   the sandbox with the `tar` and `flate2` crates; `.zip` is unpacked by
//!   the `unzip` program, which is what Mesos's fetcher runs too. The
//!   archive itself stays in the sandbox, as with Mesos.

use std::path::{Path, PathBuf};

use km_mesos::v1::command_info::Uri;

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

/// Fetches every URI into `sandbox`, stopping at the first failure.
pub async fn fetch_all(
    client: &reqwest::Client,
    uris: &[Uri],
    sandbox: &Path,
) -> Result<(), FetchError> {
    for uri in uris {
        fetch_one(client, uri, sandbox).await?;
    }
    Ok(())
}

async fn fetch_one(client: &reqwest::Client, uri: &Uri, sandbox: &Path) -> Result<(), FetchError> {
    let name =
        basename(uri).ok_or_else(|| fail(uri, "cannot tell a file name; set output_file"))?;
    if name.contains('/') && uri.output_file.is_none() {
        return Err(fail(uri, "bad file name"));
    }
    let target = sandbox.join(&name);
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| fail(uri, e))?;
    }
    let value = uri.value.as_str();
    if value.starts_with("http://") {
        download(client, uri, &target).await?;
    } else if value.starts_with("https://") {
        return Err(fail(uri, "https is not supported by this agent (built without TLS)"));
    } else if let Some(rest) = value.strip_prefix("file://") {
        copy(uri, Path::new(rest), &target).await?;
    } else if value.contains("://") {
        return Err(fail(uri, "unsupported URI scheme"));
    } else {
        copy(uri, Path::new(value), &target).await?;
    }
    if uri.executable == Some(true) {
        use std::os::unix::fs::PermissionsExt as _;
        tokio::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(|e| fail(uri, e))?;
    } else if uri.extract.unwrap_or(true)
        && let Some(kind) = archive_kind(&name)
    {
        extract(uri, kind, &target, sandbox).await?;
    }
    Ok(())
}

async fn download(client: &reqwest::Client, uri: &Uri, target: &Path) -> Result<(), FetchError> {
    let resp = client.get(&uri.value).send().await.map_err(|e| fail(uri, e))?;
    if !resp.status().is_success() {
        return Err(fail(uri, format!("HTTP {}", resp.status())));
    }
    let body = resp.bytes().await.map_err(|e| fail(uri, e))?;
    tokio::fs::write(target, &body).await.map_err(|e| fail(uri, e))
}

async fn copy(uri: &Uri, source: &Path, target: &Path) -> Result<(), FetchError> {
    tokio::fs::copy(source, target)
        .await
        .map(drop)
        .map_err(|e| fail(uri, format!("{}: {e}", source.display())))
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
        fetch_all(&reqwest::Client::new(), &uris, &sandbox).await.unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sandbox.join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(std::fs::read_to_string(sandbox.join("hello.txt")).unwrap(), "hello");
        assert!(sandbox.join("bundle.tar.gz").exists());
        assert!(sandbox.join("renamed").exists());

        let err = fetch_all(&reqwest::Client::new(), &[uri("/no/such/file")], &sandbox)
            .await
            .unwrap_err();
        assert_eq!(err.uri, "/no/such/file");
        assert!(err.to_string().contains("/no/such/file"), "{err}");
        let err =
            fetch_all(&reqwest::Client::new(), &[uri("https://x/y")], &sandbox).await.unwrap_err();
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
        fetch_all(&client, &[uri(&format!("{base}/files/hello.txt"))], &sandbox).await.unwrap();
        assert_eq!(std::fs::read_to_string(sandbox.join("hello.txt")).unwrap(), "hello over http");
        if zipped {
            fetch_all(&client, &[uri(&format!("{base}/files/bundle.zip"))], &sandbox)
                .await
                .unwrap();
            assert_eq!(std::fs::read_to_string(sandbox.join("z.txt")).unwrap(), "zipped");
        }
        let missing = format!("{base}/files/nope");
        let err = fetch_all(&client, &[uri(&missing)], &sandbox).await.unwrap_err();
        assert_eq!(err.uri, missing);
        assert!(err.problem.contains("404"), "{err}");
    }
}
