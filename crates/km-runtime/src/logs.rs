//! Reading a container's log file with `tail` and `follow`, as `kubectl
//! logs` does: the last N lines, then (when following) whatever is
//! appended until the container exits.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::runtime::{Exit, LogOptions, LogStream};

const POLL: Duration = Duration::from_millis(100);

/// The byte offset where the last `n` lines of `data` begin.
pub fn tail_offset(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    // A trailing newline ends the last line rather than starting a new one.
    let end = if data.last() == Some(&b'\n') { data.len() - 1 } else { data.len() };
    let mut seen = 0;
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// A stream over the log file at `path`. With `follow`, it ends once `done`
/// holds an exit and everything written before it has been sent.
pub(crate) async fn file_stream(
    path: PathBuf,
    opts: LogOptions,
    done: watch::Receiver<Option<Exit>>,
) -> Result<LogStream> {
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| Error::io(&path, e))?;
    let mut first = Vec::new();
    file.read_to_end(&mut first).await.map_err(|e| Error::io(&path, e))?;
    let start = opts.tail.map_or(0, |n| tail_offset(&first, n));
    let first = first.split_off(start);
    let state = (file, path, done, Some(first), opts.follow);
    let stream =
        futures::stream::unfold(state, |(mut file, path, done, first, follow)| async move {
            if let Some(first) = first
                && !first.is_empty()
            {
                return Some((Ok(first), (file, path, done, None, follow)));
            }
            if !follow {
                return None;
            }
            loop {
                let finished = done.borrow().is_some();
                let mut buf = Vec::new();
                match file.read_to_end(&mut buf).await {
                    Ok(0) if finished => return None,
                    Ok(0) => tokio::time::sleep(POLL).await,
                    Ok(_) => return Some((Ok(buf), (file, path, done, None, follow))),
                    Err(e) => {
                        let err = Error::io(&path, e);
                        // Skip to the end so the stream does not spin on the error.
                        let _ = file.seek(SeekFrom::End(0)).await;
                        return Some((Err(err), (file, path, done, None, false)));
                    }
                }
            }
        });
    Ok(Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::tail_offset;

    #[test]
    fn tail_counts_lines_from_the_end() {
        let d = b"a\nb\nc\n";
        assert_eq!(&d[tail_offset(d, 1)..], b"c\n");
        assert_eq!(&d[tail_offset(d, 2)..], b"b\nc\n");
        assert_eq!(&d[tail_offset(d, 10)..], b"a\nb\nc\n");
        assert_eq!(&d[tail_offset(d, 0)..], b"");
        let partial = b"a\nb";
        assert_eq!(&partial[tail_offset(partial, 1)..], b"b");
    }
}
