//! The dest file: an atomic copy of the source manifest, or nothing.
//!
//! Writes go to a hidden temporary file in the dest directory that is then
//! renamed over dest, so the kubelet (which ignores names starting with `.`)
//! never reads a half-written manifest. Dest gets the source's permission
//! bits. These functions block; they run on files of a few kilobytes.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A failed operation on the source or dest file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read source file {}: {source}", path.display())]
    ReadSource { path: PathBuf, source: io::Error },
    #[error("cannot write dest file {}: {source}", path.display())]
    WriteDest { path: PathBuf, source: io::Error },
    #[error("cannot remove dest file {}: {source}", path.display())]
    RemoveDest { path: PathBuf, source: io::Error },
}

/// What [`sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Dest already had the source's content and mode.
    Unchanged,
    /// Dest was missing or different and has been replaced.
    Written,
}

/// Makes `dest` a copy of `source` (content and permission bits), writing
/// only when dest is missing or differs.
pub fn sync(source: &Path, dest: &Path) -> Result<Synced, FileError> {
    let read_source =
        |source_err| FileError::ReadSource { path: source.to_owned(), source: source_err };
    let content = fs::read(source).map_err(read_source)?;
    let mode = fs::metadata(source).map_err(read_source)?.permissions().mode() & 0o7777;

    if let (Ok(existing), Ok(meta)) = (fs::read(dest), fs::metadata(dest))
        && existing == content
        && meta.permissions().mode() & 0o7777 == mode
    {
        return Ok(Synced::Unchanged);
    }
    write_atomically(dest, &content, mode)
        .map_err(|source| FileError::WriteDest { path: dest.to_owned(), source })?;
    Ok(Synced::Written)
}

/// Removes `dest`; true if it existed.
pub fn remove(dest: &Path) -> Result<bool, FileError> {
    match fs::remove_file(dest) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(FileError::RemoveDest { path: dest.to_owned(), source }),
    }
}

/// The directory dest lives in (`.` for a bare file name).
pub fn dest_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates and removes a temporary file next to dest, as [`sync`] would.
pub fn probe_dest_dir(dest: &Path) -> io::Result<()> {
    temp_file_for(dest)?.close()
}

fn temp_file_for(dest: &Path) -> io::Result<tempfile::NamedTempFile> {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".km-podmaster")
        .tempfile_in(dest_dir(dest))
}

fn write_atomically(dest: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = temp_file_for(dest)?;
    tmp.write_all(content)?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    // Make the rename durable; failing to is not worth failing the copy for.
    if let Ok(dir) = fs::File::open(dest_dir(dest)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
