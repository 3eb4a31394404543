//! Process-wide set-up shared by every subcommand: logging and the tokio runtime.

use std::future::Future;
use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Logs go to stderr; the filter comes from `--log` / `KM_LOG`. A filter that
/// does not parse falls back to `info` with a warning rather than failing.
pub(crate) fn init_logging(filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(e) = bad {
        tracing::warn!("ignoring invalid --log filter: {e}");
    }
}

/// Runs a subcommand's main future on a multi-threaded runtime.
pub(crate) fn block_on<F>(fut: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(fut)
}
