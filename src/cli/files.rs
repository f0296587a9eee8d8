//! Reading inputs and writing outputs: size limits, clear errors, atomic
//! writes (a plan file is either the old one or the whole new one).

use std::io::{self, Read, Write};
use std::path::Path;

use super::CliError;

/// Reads a file, refusing to read more than `limit` bytes (one more is read,
/// so the caller can tell the file is too large).
pub fn read_limited(path: &Path, limit: usize, what: &str) -> Result<Vec<u8>, CliError> {
    let fail = |source: io::Error| {
        let hint = match source.kind() {
            io::ErrorKind::NotFound if what == "topology" => format!(
                "create {} (mesh.toml.example is a commented start), or point at another file with -f PATH",
                path.display()
            ),
            io::ErrorKind::NotFound => format!("check the path of the {what} file"),
            io::ErrorKind::PermissionDenied => "check the file's permissions".to_string(),
            _ => format!("pass the path of a {what} file"),
        };
        CliError::Read {
            path: path.to_path_buf(),
            hint,
            source,
        }
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    if file.metadata().map_err(fail)?.is_dir() {
        return Err(fail(io::Error::other("it is a directory")));
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(fail)?;
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let fail = |source: io::Error| CliError::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| fail(io::Error::other("not a file name")))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}
