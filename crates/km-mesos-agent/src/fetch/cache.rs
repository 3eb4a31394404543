//! The fetcher cache: a URI marked `cache: true` is downloaded once per agent and reused by
//! every later launch that asks for it, as Mesos's fetcher cache does.
//!
//! - Entries are keyed by the command's user and the URI's value, so a changed file must get a
//!   new URI (km scheduler puts a version in the URL of the binary it serves).
//! - Launches asking for the same URI at the same time wait for one download.
//! - The cache holds at most `--fetcher_cache_size` bytes: the least recently used entries
//!   that no launch is using are deleted to make room; a file bigger than the whole cache is
//!   moved into the sandbox and not kept. The limit is checked when a download completes
//!   (`--fetcher_max_size` bounds each download).
//! - An executable is hard-linked into the sandbox (Linux refuses writes to a running
//!   program, so a link cannot be changed under the cache), and cached read-only (0555); any
//!   other file is copied, so a task that edits its copy cannot change what the next one gets.
//!   Where a link is impossible (another file system) the file is copied.
//! - The cache lives in `--fetcher_cache_dir` (default `<work_dir>/fetch`) and is not kept
//!   across agent restarts: the files this cache names are deleted when the agent starts.
//! - A failure of the cache itself (its directory unwritable, say) is logged and the URI is
//!   fetched straight into the sandbox; a failure of the source (HTTP 404, a missing file)
//!   fails the launch as a direct fetch does.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use km_mesos::v1::command_info::Uri;

use super::{FetchError, fetch_source};

/// How a cached file reached the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Hard-linked to the cache entry (read-only, mode 0555).
    Linked,
    /// Copied (or moved, when too big to keep): the caller sets its mode.
    Copied,
}

/// Why the cache could not serve a URI.
#[derive(Debug)]
pub(crate) enum CacheError {
    /// The source failed: the launch fails.
    Source(FetchError),
    /// The cache failed: fetch directly instead.
    Cache(String),
}

/// The agent's fetcher cache.
#[derive(Debug)]
pub struct FetchCache {
    dir: PathBuf,
    capacity: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    tick: u64,
}

#[derive(Debug, Default)]
struct Entry {
    /// Held while a launch downloads or places this entry.
    busy: Arc<tokio::sync::Mutex<()>>,
    file: Option<(PathBuf, u64)>,
    used_at: u64,
}

/// Sizes for `/metrics/snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSize {
    /// `--fetcher_cache_size`.
    pub total: u64,
    /// Bytes held now.
    pub used: u64,
}

/// Names of files this cache writes: `<sequence>-<name>`.
fn is_cache_file(name: &str) -> bool {
    name.split_once('-')
        .is_some_and(|(seq, _)| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

impl FetchCache {
    /// A cache in `dir` of at most `capacity` bytes. Files an earlier run of the agent left
    /// there (and only those) are deleted.
    pub fn new(dir: PathBuf, capacity: u64) -> FetchCache {
        if let Ok(list) = std::fs::read_dir(&dir) {
            for e in list.flatten() {
                if e.file_name().to_str().is_some_and(is_cache_file) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        FetchCache { dir, capacity, inner: Mutex::new(Inner::default()) }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cache's limit and what it holds.
    pub fn size(&self) -> CacheSize {
        let used = self.inner().entries.values().filter_map(|e| e.file.as_ref()).map(|f| f.1).sum();
        CacheSize { total: self.capacity, used }
    }

    /// Puts `uri` at `target` (a path [`super::place`] gave) from the cache, downloading it
    /// into the cache first if it is not there.
    pub(crate) async fn fetch_into(
        &self,
        client: &reqwest::Client,
        uri: &Uri,
        user: &str,
        target: &Path,
        max_size: u64,
    ) -> Result<Placed, CacheError> {
        let key = format!("{user}\0{}", uri.value);
        let busy = Arc::clone(&self.inner().entries.entry(key.clone()).or_default().busy);
        let _guard = busy.lock().await;
        let executable = uri.executable == Some(true);
        let held = {
            let mut inner = self.inner();
            inner.tick += 1;
            let tick = inner.tick;
            let entry = inner.entries.entry(key.clone()).or_default();
            entry.used_at = tick;
            entry.file.clone()
        };
        let file = match held {
            Some((path, _)) if path.is_file() => path,
            _ => {
                let path = match self.download(client, uri, max_size).await {
                    Ok(path) => path,
                    Err(e) => {
                        self.forget_if_idle(&key, &busy);
                        return Err(e);
                    }
                };
                let size = std::fs::metadata(&path)
                    .map_err(|e| CacheError::Cache(format!("{}: {e}", path.display())))?
                    .len();
                if !self.admit(&key, &path, size) {
                    // Too big to keep: it becomes the sandbox's file.
                    let target = target.to_owned();
                    return blocking(move || move_into(&path, &target))
                        .await
                        .map(|()| Placed::Copied);
                }
                path
            }
        };
        let target = target.to_owned();
        blocking(move || {
            if executable && std::fs::hard_link(&file, &target).is_ok() {
                return Ok(Placed::Linked);
            }
            copy_file(&file, &target).map(|()| Placed::Copied)
        })
        .await
    }

    async fn download(
        &self,
        client: &reqwest::Client,
        uri: &Uri,
        max_size: u64,
    ) -> Result<PathBuf, CacheError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| CacheError::Cache(format!("{}: {e}", self.dir.display())))?;
        let seq = {
            let mut inner = self.inner();
            inner.tick += 1;
            inner.tick
        };
        let name = super::basename(uri).unwrap_or_default().replace('/', "_");
        let path = self.dir.join(format!("{seq}-{name}"));
        // A file the cache cannot create is the cache's failure, not the source's.
        std::fs::File::create(&path)
            .map_err(|e| CacheError::Cache(format!("{}: {e}", path.display())))?;
        fetch_source(client, uri, &path, max_size).await.map_err(CacheError::Source)?;
        let mode = if uri.executable == Some(true) { 0o555 } else { 0o444 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| CacheError::Cache(format!("{}: {e}", path.display())))?;
        Ok(path)
    }

    /// Drops `key`'s entry when it holds no file and no other launch waits for it (a failed
    /// fetch leaves nothing behind). `busy` is the caller's handle on the entry's lock.
    fn forget_if_idle(&self, key: &str, busy: &Arc<tokio::sync::Mutex<()>>) {
        let mut inner = self.inner();
        // The entry's own handle, the caller's, and nobody else's.
        let idle = inner.entries.get(key).is_some_and(|e| {
            e.file.is_none() && Arc::ptr_eq(&e.busy, busy) && Arc::strong_count(busy) == 2
        });
        if idle {
            inner.entries.remove(key);
        }
    }

    /// Records `path` as `key`'s file, deleting least recently used idle entries until it
    /// fits. False when it cannot fit (the file is then not kept).
    fn admit(&self, key: &str, path: &Path, size: u64) -> bool {
        let mut inner = self.inner();
        let mut used: u64 =
            inner.entries.values().filter_map(|e| e.file.as_ref()).map(|f| f.1).sum();
        while used.saturating_add(size) > self.capacity {
            let victim = inner
                .entries
                .iter()
                .filter(|(k, e)| k.as_str() != key && e.file.is_some() && e.busy.try_lock().is_ok())
                .min_by_key(|(_, e)| e.used_at)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { return false };
            if let Some(e) = inner.entries.get_mut(&victim)
                && let Some((file, n)) = e.file.take()
            {
                let _ = std::fs::remove_file(&file);
                used = used.saturating_sub(n);
                tracing::debug!(file = %file.display(), "fetcher cache: evicted");
            }
        }
        inner.entries.retain(|k, e| k == key || e.file.is_some() || Arc::strong_count(&e.busy) > 1);
        if let Some(e) = inner.entries.get_mut(key) {
            e.file = Some((path.to_owned(), size));
        }
        true
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), CacheError> {
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).map(|_| ()).map_err(|e| {
        CacheError::Cache(format!("copying {} to {}: {e}", from.display(), to.display()))
    })?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| CacheError::Cache(format!("{}: {e}", to.display())))
}

fn move_into(from: &Path, to: &Path) -> Result<(), CacheError> {
    if std::fs::rename(from, to).is_ok() {
        return std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| CacheError::Cache(format!("{}: {e}", to.display())));
    }
    let copied = copy_file(from, to);
    let _ = std::fs::remove_file(from);
    copied
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CacheError::Cache(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::fetch_all;
    use super::*;

    const MAX: u64 = 1 << 20;

    /// A server of `/<n>` (n bytes of 'x', n ≤ 4096) and `/gate/<n>` (the same, held until
    /// the returned notify fires), counting the requests it answers.
    async fn server() -> (String, Arc<AtomicUsize>, Arc<tokio::sync::Notify>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let (h1, h2, g) = (hits.clone(), hits.clone(), gate.clone());
        let app = axum::Router::new()
            .route(
                "/{n}",
                axum::routing::get(move |axum::extract::Path(n): axum::extract::Path<usize>| {
                    let hits = h1.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        vec![b'x'; n.min(4096)]
                    }
                }),
            )
            .route(
                "/gate/{n}",
                axum::routing::get(move |axum::extract::Path(n): axum::extract::Path<usize>| {
                    let (hits, gate) = (h2.clone(), g.clone());
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        vec![b'x'; n.min(4096)]
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, hits, gate)
    }

    fn cached(value: &str, executable: bool, output: &str) -> Uri {
        Uri {
            value: value.into(),
            cache: Some(true),
            executable: Some(executable),
            output_file: Some(output.into()),
            ..Uri::default()
        }
    }

    fn sandbox(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn an_executable_is_downloaded_once_and_linked_read_only_into_each_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let (base, hits, _) = server().await;
        let cache = FetchCache::new(dir.path().join("cache"), MAX);
        let client = reqwest::Client::new();
        let uri = cached(&format!("{base}/100"), true, "km");
        let (a, b) = (sandbox(dir.path(), "a"), sandbox(dir.path(), "b"));
        fetch_all(&client, std::slice::from_ref(&uri), &a, MAX, Some((&cache, ""))).await.unwrap();
        fetch_all(&client, std::slice::from_ref(&uri), &b, MAX, Some((&cache, ""))).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let (ma, mb) =
            (std::fs::metadata(a.join("km")).unwrap(), std::fs::metadata(b.join("km")).unwrap());
        assert_eq!((ma.ino(), ma.len()), (mb.ino(), 100), "one file on disk, linked twice");
        assert_eq!(ma.mode() & 0o777, 0o555);
        assert_eq!(cache.size(), CacheSize { total: MAX, used: 100 });

        // Another user's launch has its own entry; an uncached URI is always downloaded.
        fetch_all(
            &client,
            std::slice::from_ref(&uri),
            &sandbox(dir.path(), "c"),
            MAX,
            Some((&cache, "nobody")),
        )
        .await
        .unwrap();
        let plain = Uri { cache: None, ..uri.clone() };
        fetch_all(&client, &[plain], &sandbox(dir.path(), "d"), MAX, Some((&cache, "")))
            .await
            .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert_eq!(std::fs::metadata(dir.path().join("d/km")).unwrap().mode() & 0o777, 0o755);
    }

    #[tokio::test]
    async fn other_files_are_copied_so_a_task_cannot_change_the_next_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (base, hits, _) = server().await;
        let cache = FetchCache::new(dir.path().join("cache"), MAX);
        let client = reqwest::Client::new();
        let uri = cached(&format!("{base}/10"), false, "conf");
        let a = sandbox(dir.path(), "a");
        fetch_all(&client, std::slice::from_ref(&uri), &a, MAX, Some((&cache, ""))).await.unwrap();
        std::fs::write(a.join("conf"), "edited by the task").unwrap();
        let b = sandbox(dir.path(), "b");
        fetch_all(&client, std::slice::from_ref(&uri), &b, MAX, Some((&cache, ""))).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(std::fs::read_to_string(b.join("conf")).unwrap(), "x".repeat(10));
    }

    #[tokio::test]
    async fn least_recently_used_entries_make_room_and_oversized_files_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (base, hits, _) = server().await;
        let cache = FetchCache::new(dir.path().join("cache"), 1000);
        let client = reqwest::Client::new();
        let get = |n: u32, into: &str| {
            let uri = cached(&format!("{base}/{n}"), true, "f");
            let (client, cache, into) = (&client, &cache, sandbox(dir.path(), into));
            async move { fetch_all(client, &[uri], &into, MAX, Some((cache, ""))).await.unwrap() }
        };
        get(400, "1").await;
        get(500, "2").await;
        get(400, "3").await; // 400 is now newer than 500
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        get(300, "4").await; // 1200 > 1000: 500 goes
        assert_eq!(cache.size().used, 700);
        get(400, "5").await;
        assert_eq!(hits.load(Ordering::SeqCst), 3, "400 was kept");
        get(500, "6").await;
        assert_eq!(hits.load(Ordering::SeqCst), 4, "500 was evicted and downloaded again");
        // Entries linked into sandboxes stay whole there when evicted.
        assert_eq!(std::fs::metadata(dir.path().join("2/f")).unwrap().len(), 500);

        get(2000, "7").await;
        assert_eq!(std::fs::metadata(dir.path().join("7/f")).unwrap().len(), 2000);
        assert!(cache.size().used <= 1000);
        let files: u64 = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(files, cache.size().used, "the directory holds what the cache counts");
    }

    #[tokio::test]
    async fn launches_asking_at_once_share_one_download() {
        let dir = tempfile::tempdir().unwrap();
        let (base, hits, gate) = server().await;
        let cache = FetchCache::new(dir.path().join("cache"), MAX);
        let client = reqwest::Client::new();
        let uri = cached(&format!("{base}/gate/64"), true, "km");
        let boxes: Vec<PathBuf> = (0..4).map(|i| sandbox(dir.path(), &i.to_string())).collect();
        let fetches =
            futures::future::join_all(boxes.iter().map(|b| {
                fetch_all(&client, std::slice::from_ref(&uri), b, MAX, Some((&cache, "")))
            }));
        let open = async {
            while hits.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            gate.notify_one();
        };
        let (results, ()) = tokio::join!(fetches, open);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        for b in &boxes {
            assert_eq!(std::fs::metadata(b.join("km")).unwrap().len(), 64);
        }
    }

    #[tokio::test]
    async fn a_failing_source_fails_the_launch_and_the_cache_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FetchCache::new(dir.path().join("cache"), MAX);
        let client = reqwest::Client::new();
        let missing = dir.path().join("missing").display().to_string();
        let err = fetch_all(
            &client,
            &[cached(&missing, true, "km")],
            &sandbox(dir.path(), "a"),
            MAX,
            Some((&cache, "")),
        )
        .await
        .unwrap_err();
        assert!(err.problem.contains("No such file"), "{err}");
        assert_eq!(cache.size().used, 0);
        assert!(cache.inner().entries.is_empty(), "a failed fetch leaves no entry");
        assert!(!dir.path().join("a/km").exists());
    }

    #[tokio::test]
    async fn an_unusable_cache_directory_falls_back_to_a_direct_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "not a directory").unwrap();
        let cache = FetchCache::new(blocker.join("cache"), MAX);
        let src = dir.path().join("bin");
        std::fs::write(&src, "#!/bin/sh\n").unwrap();
        let a = sandbox(dir.path(), "a");
        let uri = cached(&src.display().to_string(), true, "km");
        fetch_all(&reqwest::Client::new(), &[uri], &a, MAX, Some((&cache, ""))).await.unwrap();
        assert_eq!(std::fs::read_to_string(a.join("km")).unwrap(), "#!/bin/sh\n");
        assert_eq!(std::fs::metadata(a.join("km")).unwrap().mode() & 0o777, 0o755);
    }

    #[tokio::test]
    async fn a_cache_file_that_cannot_be_written_falls_back_to_a_direct_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        // Directories where the cache's files would go: creating one of them fails.
        for seq in 1..10 {
            std::fs::create_dir_all(cache_dir.join(format!("{seq}-km"))).unwrap();
        }
        let cache = FetchCache::new(cache_dir, MAX);
        let src = dir.path().join("bin");
        std::fs::write(&src, "#!/bin/sh\n").unwrap();
        let a = sandbox(dir.path(), "a");
        let uri = cached(&src.display().to_string(), true, "km");
        fetch_all(&reqwest::Client::new(), &[uri], &a, MAX, Some((&cache, ""))).await.unwrap();
        assert_eq!(std::fs::read_to_string(a.join("km")).unwrap(), "#!/bin/sh\n");
        assert_eq!(cache.size().used, 0);
    }

    #[test]
    fn a_restarted_agent_deletes_its_old_cache_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["1-km", "22-conf.tgz", "notes", "-x", "a-1"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let _ = FetchCache::new(dir.path().to_owned(), MAX);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["-x", "a-1", "notes"]);
    }
}
