//! mesh.toml as the controller reads it: polled, validated, and the last
//! good topology kept when an edit is invalid.
//!
//! A ConfigMap mounted as a volume is updated by the kubelet writing a new
//! timestamped directory and swapping the `..data` symlink to it
//! (kubernetes `pkg/volume/util/atomic_writer.go`): the file's path stays a
//! symlink whose inode and mtime never change. So the content is read
//! through the path, symlinks resolved, and compared with what was read
//! last; a watch on the path's inode would miss the swap. It owns no
//! cluster access and decides nothing about the mesh.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::topology::{self, MAX_FILE_BYTES, Problems, Topology};

/// What a read of mesh.toml found, when it differs from the last read.
#[derive(Debug)]
pub enum Read {
    /// A valid topology, with its warnings.
    Valid(Box<Topology>, Problems),
    /// An invalid one: the last good topology stays.
    Invalid(Problems),
    /// The file could not be read (missing, too large, not a file).
    Unreadable(String),
}

/// The topology file and the digest of what was last read from it.
pub struct Source {
    path: PathBuf,
    last: Option<[u8; 32]>,
}

impl Source {
    pub fn new(path: &Path) -> Source {
        Source {
            path: path.to_path_buf(),
            last: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; `None` when its content is what was read last time
    /// (an invalid edit is reported once, not on every poll).
    pub async fn poll(&mut self) -> Option<Read> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) if bytes.len() > MAX_FILE_BYTES => {
                return self.unreadable(format!("larger than the {MAX_FILE_BYTES} bytes meshform reads"));
            }
            Ok(bytes) => bytes,
            Err(e) => return self.unreadable(e.to_string()),
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if self.last == Some(digest) {
            return None;
        }
        self.last = Some(digest);
        let name = self.path.display().to_string();
        Some(match topology::check(&name, &bytes).into_result() {
            Ok((topology, warnings)) => Read::Valid(Box::new(topology), warnings),
            Err(problems) => Read::Invalid(problems),
        })
    }

    /// Reported once until the file is read again.
    fn unreadable(&mut self, why: String) -> Option<Read> {
        const UNREADABLE: [u8; 32] = [0; 32];
        if self.last == Some(UNREADABLE) {
            return None;
        }
        self.last = Some(UNREADABLE);
        Some(Read::Unreadable(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\n";

    #[tokio::test]
    async fn a_swapped_symlink_is_read_and_an_invalid_edit_keeps_nothing_new() {
        // The kubelet's layout: mesh.toml -> ..data/mesh.toml, ..data -> ..v1.
        let dir = tempfile::tempdir().unwrap();
        let version = |n: &str, text: &str| {
            let d = dir.path().join(n);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("mesh.toml"), text).unwrap();
        };
        let swap = |n: &str| {
            let tmp = dir.path().join("..data_tmp");
            std::os::unix::fs::symlink(n, &tmp).unwrap();
            std::fs::rename(&tmp, dir.path().join("..data")).unwrap();
        };
        version("..v1", VALID);
        swap("..v1");
        std::os::unix::fs::symlink("..data/mesh.toml", dir.path().join("mesh.toml")).unwrap();
        let mut source = Source::new(&dir.path().join("mesh.toml"));
        assert!(matches!(source.poll().await, Some(Read::Valid(..))));
        assert!(source.poll().await.is_none(), "unchanged content is no news");

        version("..v2", "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"Not_A_Label\"\n");
        swap("..v2");
        assert!(matches!(source.poll().await, Some(Read::Invalid(_))));
        assert!(source.poll().await.is_none(), "an invalid edit is reported once");

        version("..v3", &VALID.replace("\"a\"", "\"b\""));
        swap("..v3");
        match source.poll().await {
            Some(Read::Valid(t, _)) => assert_eq!(t.clusters[0].name, "b"),
            other => panic!("expected the new topology, got {other:?}"),
        }
        std::fs::remove_file(dir.path().join("..data")).unwrap();
        assert!(matches!(source.poll().await, Some(Read::Unreadable(_))));
        assert!(source.poll().await.is_none());
    }
}
