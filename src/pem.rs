//! How PEM files are read — CA bundles and directories, client certificates
//! and keys, whoever names them (an operator's flag or a
//! SecretProviderClass): as bounded regular files, opened without blocking,
//! so a device, a FIFO or a huge file fails fast instead of hanging or
//! exhausting memory. All of it is blocking I/O: call it off the runtime.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

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

/// Reads a file the way every PEM file is read: a regular file only (not a
/// device, FIFO, socket or directory), opened without blocking, and at most
/// `max` bytes, whatever the file claims its size is. Blocking I/O: call it
/// off the async runtime.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO opened for reading would wait for a writer forever.
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
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
        return Err(format!("{} is {what}, not a regular file", path.display()));
    }
    if meta.len() > max {
        return Err(format!(
            "{} is {} bytes, more than the {max}-byte limit for such files",
            path.display(),
            meta.len()
        ));
    }
    // Files in /proc and /sys report a size of 0 and can be any length.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "{} is larger than the {max}-byte limit for such files",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Reads every certificate of a PEM file (a bounded regular file, see
/// [`read_regular_file`]). Blocking I/O.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_regular_file(path, MAX_PEM_FILE_BYTES).map_err(|e| format!("cannot read CA file: {e}"))?;
    parse_pem_certs(&pem, &path.display().to_string())
}

/// Parses every certificate of PEM text.
pub fn parse_pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in {what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Reads every PEM certificate of the regular files in a directory (like
/// `VAULT_CAPATH`), at most [`MAX_DIRECTORY_FILES`] entries
/// and [`MAX_DIRECTORY_BYTES`] in all. Blocking I/O.
pub fn read_pem_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read CA directory {}: {e}", dir.display()))?;
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
            return Err(format!(
                "CA directory {} holds more than {MAX_DIRECTORY_BYTES} bytes of files",
                dir.display()
            ));
        }
        if let Ok(mut c) = parse_pem_certs(&pem, &path.display().to_string()) {
            certs.append(&mut c);
        }
    }
    if certs.is_empty() {
        return Err(format!("CA directory {} holds no PEM certificate", dir.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1) from a bounded regular
/// file. Blocking I/O.
pub fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_regular_file(path, MAX_PEM_FILE_BYTES).map_err(|e| format!("cannot read private key: {e}"))?;
    parse_pem_key(&pem, &path.display().to_string())
}

/// Parses a PEM private key from memory.
pub fn parse_pem_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("bad private key in {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.pem");
        std::fs::write(&small, b"hello").unwrap();
        assert_eq!(read_regular_file(&small, 5).unwrap(), b"hello");
        assert!(read_regular_file(&small, 4).unwrap_err().contains("limit"));
        assert!(read_regular_file(Path::new("/dev/zero"), 1024)
            .unwrap_err()
            .contains("device"));
        assert!(read_regular_file(dir.path(), 1024).unwrap_err().contains("directory"));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let started = std::time::Instant::now();
        assert!(read_regular_file(&fifo, 1024).unwrap_err().contains("FIFO"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // /proc files claim to be empty regular files of any length.
        assert!(read_regular_file(Path::new("/proc/self/maps"), 16)
            .unwrap_err()
            .contains("limit"));
    }
}
