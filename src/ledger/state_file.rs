//! The ledger's state file: what survives a restart, sealed with AES-256-GCM
//! under a key derived from the object-version key, bound to the node and
//! a generation, written through a new temporary file and a rename.

use super::*;

impl Ledger {
    /// Writes the state file if anything changed, encrypted with `key`.
    pub fn persist(&self, key: &[u8; 32]) {
        let Some(path) = &self.settings.state_file else {
            // Kept in memory only: nothing to write, but the change is seen
            // (the next one wakes the background loop again).
            self.lock().dirty = false;
            return;
        };
        let (state, generation) = {
            let mut inner = self.lock();
            if !inner.dirty {
                return;
            }
            inner.dirty = false;
            inner.generation += 1;
            let state = State {
                entries: inner.entries.values().cloned().collect(),
                retiring: inner.retiring.clone(),
                reviews: inner.reviewed.values().cloned().collect(),
            };
            (state, inner.generation)
        };
        let seal = Seal {
            key,
            node: self.settings.node.as_deref().unwrap_or_default(),
            generation,
        };
        if let Err(e) = write_state(path, &seal, &state) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the ledger state file");
            self.lock().dirty = true;
        }
    }

    /// Loads the state file written by an earlier run. A missing file is
    /// normal; a corrupt or foreign one (another key, tampering) is reported
    /// and ignored, and so is one that is not a regular file of at most
    /// [`Ledger::state_file_limit`] bytes (the directory is a hostPath other
    /// providers share: a link there is never followed).
    pub fn restore(&self, key: &[u8; 32]) {
        let Some(path) = &self.settings.state_file else { return };
        let bytes = match read_state_file(path, self.state_file_limit()) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = %why, "refusing the ledger state file; starting empty (it is replaced at the next write)");
                return;
            }
        };
        let node = self.settings.node.as_deref().unwrap_or_default();
        match open_state(key, node, &bytes) {
            Ok((_, generation)) if generation < self.lock().generation => {
                tracing::warn!(path = %path.display(), generation, "ignoring an older ledger state file than this process has seen");
            }
            Ok((state, generation)) => {
                let now = self.clock.now();
                let mut inner = self.lock();
                inner.generation = generation;
                let mut restored = 0;
                for e in state.entries {
                    // Entries made by mounts since start-up are newer: keep them.
                    if e.alive(now) && !inner.entries.contains_key(&e.key) {
                        restored += 1;
                        inner.entries.insert(e.key.clone(), e);
                    }
                }
                inner.retiring.extend(state.retiring);
                for r in state.reviews {
                    if r.expires > now {
                        inner.reviewed.entry(r.key.clone()).or_insert(r);
                    }
                }
                tracing::info!(pods = restored, path = %path.display(), "resumed the credential ledger from the state file");
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = why, "ignoring the ledger state file (corrupt, tampered with, or written with another key); credentials will be issued afresh");
            }
        }
    }
}

impl Ledger {
    /// The largest state file read: what the ledger can hold (held
    /// responses, twice for JSON's escaping) and 16 MiB for its tokens,
    /// retirements and reviews.
    pub fn state_file_limit(&self) -> u64 {
        (self.settings.max_held_bytes as u64).saturating_mul(2) + 16 * 1024 * 1024
    }
}

/// Reads the state file at `path` without following a link in its place,
/// only if it is a regular file of at most `limit` bytes. `None`: there is
/// none.
pub(super) fn read_state_file(path: &std::path::Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Not followed if a link; no wait if a FIFO.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symbolic link, which is not followed".to_string())
        }
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("it is not a regular file ({:?})", meta.file_type()));
    }
    if meta.len() > limit {
        return Err(format!(
            "it is {} bytes, over the {limit} a state file can be",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "it grew past the {limit} bytes a state file can be while it was read"
        ));
    }
    Ok(Some(bytes))
}

/// The state file format: this magic, the generation (8 bytes, big-endian),
/// a 12-byte nonce, then the AES-256-GCM sealed JSON. The authenticated data
/// is the magic, the generation and the node's name, so neither the header
/// nor the node can be changed without the file being refused.
pub(super) const MAGIC: &[u8] = b"VCPLEDGER2";
const NONCE_LEN: usize = 12;

/// What a state file is sealed with, besides its content.
pub(super) struct Seal<'a> {
    pub(super) key: &'a [u8; 32],
    pub(super) node: &'a str,
    pub(super) generation: u64,
}

fn additional_data(node: &str, generation: u64) -> Vec<u8> {
    let mut aad = MAGIC.to_vec();
    aad.extend_from_slice(&generation.to_be_bytes());
    aad.extend_from_slice(&(node.len() as u64).to_be_bytes());
    aad.extend_from_slice(node.as_bytes());
    aad
}

pub(super) fn write_state(path: &std::path::Path, seal: &Seal<'_>, state: &State) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let rng = ring::rand::SystemRandom::new();
    let plain = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| std::io::Error::other("no randomness"))?;
    let sealing = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, seal.key).map_err(|_| std::io::Error::other("bad key"))?,
    );
    let mut data = plain;
    sealing
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(additional_data(seal.node, seal.generation)),
            &mut data,
        )
        .map_err(|_| std::io::Error::other("encryption failed"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    // The directory is shared with the driver and other providers: the
    // temporary file gets a name nobody can guess, is created only if it
    // does not exist, and a symlink planted in its place is not followed.
    let mut suffix = [0u8; 8];
    rng.fill(&mut suffix)
        .map_err(|_| std::io::Error::other("no randomness"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&seal.generation.to_be_bytes())?;
        f.write_all(&nonce)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself must survive a crash too.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Opens a state file written on `node`: its content and generation.
pub(super) fn open_state(key: &[u8; 32], node: &str, bytes: &[u8]) -> Result<(State, u64), &'static str> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a ledger state file of this version")?;
    if rest.len() < 8 + NONCE_LEN + aead::AES_256_GCM.tag_len() {
        return Err("truncated");
    }
    let (generation, rest) = rest.split_at(8);
    let generation = u64::from_be_bytes(generation.try_into().map_err(|_| "truncated")?);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
    let opening = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| "bad key")?);
    let mut data = sealed.to_vec();
    let plain = opening
        .open_in_place(nonce, aead::Aad::from(additional_data(node, generation)), &mut data)
        .map_err(|_| "authentication failed (another key or node, or tampered with)")?;
    let state = serde_json::from_slice(plain).map_err(|_| "unreadable content")?;
    Ok((state, generation))
}
