//! How PEM files are read — CA bundles and directories, client certificates
//! and keys, whoever names them (an operator's flag or a
//! SecretProviderClass): as bounded regular files, opened without blocking,
//! so a device, a FIFO or a huge file fails fast instead of hanging or
//! exhausting memory. All of it is blocking I/O: call it off the runtime.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Cap on one PEM file (a CA bundle, a client certificate or key), whoever
/// names it: far above any real one (a full public CA bundle is ~200 KiB),
/// far below memory.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Most entries looked at in one CA directory.
pub const MAX_DIRECTORY_FILES: usize = 256;

/// Cap on all PEM files of one CA directory together.
pub const MAX_DIRECTORY_BYTES: u64 = 4 * 1024 * 1024;

/// Why a PEM file could not be used. Messages name the file; the I/O and
/// PEM errors behind them stay in the chain.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// Opening or inspecting the file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// `open`, `stat` or `read`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file.
    #[error("{} is {what}, not a regular file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead (`a directory`, `a FIFO`, ...).
        what: &'static str,
    },
    /// The file is larger than allowed.
    #[error("{} is {}, more than the {max}-byte limit for such files", path.display(), size.map_or("larger".to_string(), |s| format!("{s} bytes")))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, when it said so (files in /proc and /sys do not).
        size: Option<u64>,
        /// The limit.
        max: u64,
    },
    /// A file of a given role could not be read (`CA file`, `private key`).
    #[error("cannot read {role}: {source}")]
    Reading {
        /// What the file is for.
        role: &'static str,
        /// Why.
        #[source]
        source: Box<PemError>,
    },
    /// The text is not valid PEM.
    #[error("bad PEM in {what}: {source}")]
    BadPem {
        /// Where the text came from.
        what: String,
        /// The parser's complaint.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The text holds no certificate.
    #[error("{what} holds no PEM certificate")]
    NoCertificate {
        /// Where the text came from.
        what: String,
    },
    /// The text holds no private key.
    #[error("bad private key in {what}: {source}")]
    BadKey {
        /// Where the text came from.
        what: String,
        /// The parser's complaint.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A CA directory could not be listed.
    #[error("cannot read CA directory {}: {source}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A CA directory holds too much, or no certificate at all.
    #[error("CA directory {} {problem}", dir.display())]
    DirectoryContents {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Reads a file the way every PEM file is read: a regular file only (not a
/// device, FIFO, socket or directory), opened without blocking, and at most
/// `max` bytes, whatever the file claims its size is. Blocking I/O: call it
/// off the async runtime.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, PemError> {
    let io = |action: &'static str| {
        move |source| PemError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO opened for reading would wait for a writer forever.
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io("open"))?;
    let meta = file.metadata().map_err(io("stat"))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(PemError::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }
    let too_large = |size| PemError::TooLarge {
        path: path.to_path_buf(),
        size,
        max,
    };
    if meta.len() > max {
        return Err(too_large(Some(meta.len())));
    }
    // Files in /proc and /sys report a size of 0 and can be any length.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1).read_to_end(&mut bytes).map_err(io("read"))?;
    if bytes.len() as u64 > max {
        return Err(too_large(None));
    }
    Ok(bytes)
}

/// A PEM file for `role`, read as [`read_regular_file`] reads.
fn read_for(role: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    read_regular_file(path, MAX_PEM_FILE_BYTES).map_err(|e| PemError::Reading {
        role,
        source: Box::new(e),
    })
}

/// Reads every certificate of a PEM file (a bounded regular file, see
/// [`read_regular_file`]). Blocking I/O.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    parse_pem_certs(&read_for("CA file", path)?, &path.display().to_string())
}

/// Parses every certificate of PEM text.
pub fn parse_pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|source| PemError::BadPem {
            what: what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate { what: what.to_string() });
    }
    Ok(certs)
}

/// Reads every PEM certificate of the regular files in a directory (like
/// `VAULT_CAPATH`), at most [`MAX_DIRECTORY_FILES`] entries
/// and [`MAX_DIRECTORY_BYTES`] in all. Blocking I/O.
pub fn read_pem_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PemError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    let contents = |problem: String| PemError::DirectoryContents {
        dir: dir.to_path_buf(),
        problem,
    };
    let mut certs = Vec::new();
    let mut total = 0u64;
    for entry in entries.take(MAX_DIRECTORY_FILES).flatten() {
        let path = entry.path();
        // Sub-directories (Kubernetes' ..data), FIFOs and devices are skipped.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Ok(pem) = read_regular_file(&path, MAX_PEM_FILE_BYTES) else {
            continue;
        };
        total += pem.len() as u64;
        if total > MAX_DIRECTORY_BYTES {
            return Err(contents(format!(
                "holds more than {MAX_DIRECTORY_BYTES} bytes of files"
            )));
        }
        if let Ok(mut c) = parse_pem_certs(&pem, &path.display().to_string()) {
            certs.append(&mut c);
        }
    }
    if certs.is_empty() {
        return Err(contents("holds no PEM certificate".to_string()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1) from a bounded regular
/// file. Blocking I/O.
pub fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    parse_pem_key(&read_for("private key", path)?, &path.display().to_string())
}

/// Parses a PEM private key from memory.
pub fn parse_pem_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| PemError::BadKey {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.pem");
        std::fs::write(&small, b"hello").unwrap();
        let refused = |path: &Path, max: u64| read_regular_file(path, max).unwrap_err().to_string();
        assert_eq!(read_regular_file(&small, 5).unwrap(), b"hello");
        assert!(refused(&small, 4).contains("limit"));
        assert!(refused(Path::new("/dev/zero"), 1024).contains("device"));
        assert!(refused(dir.path(), 1024).contains("directory"));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let started = std::time::Instant::now();
        assert!(refused(&fifo, 1024).contains("FIFO"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // /proc files claim to be empty regular files of any length.
        assert!(refused(Path::new("/proc/self/maps"), 16).contains("limit"));
        // The system's own error stays in the chain.
        let missing = read_pem_certs(&dir.path().join("missing.pem")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            format!(
                "cannot read CA file: cannot open {}/missing.pem: No such file or directory (os error 2)",
                dir.path().display()
            )
        );
        let io = std::error::Error::source(&missing)
            .and_then(std::error::Error::source)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the io::Error behind it");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}
