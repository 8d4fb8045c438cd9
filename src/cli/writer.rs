//! Writing a mount's files into a directory the way the driver (kubelet's
//! atomic writer) does: every file goes into a fresh hidden directory with
//! its exact mode, a `..data` symlink is swapped to it in one rename, and
//! each top-level name is a symlink through `..data`. A reader sees the old
//! set or the new set, never a mix; files missing from the new set vanish.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::render::OutFile;
use crate::spc::check_object_path;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

fn err(what: String) -> io::Error {
    io::Error::other(what)
}

/// Writes `files` into `target` atomically (see the module docs). Refuses a
/// target holding anything this layout did not create, so a mistyped
/// directory is never cleaned out.
pub fn write_atomic(target: &Path, files: &[OutFile]) -> io::Result<()> {
    for f in files {
        check_object_path(&f.path).map_err(|e| err(format!("file path {e}")))?;
    }
    std::fs::create_dir_all(target)
        .map_err(|e| err(format!("cannot create the target directory {}: {e}", target.display())))?;
    let old_links = check_layout(target)?;
    let old_dir = std::fs::read_link(target.join(DATA)).ok();

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir_name = format!("..{nanos}.{}", std::process::id());
    let dir = target.join(&dir_name);
    make_dir(&dir)?;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            make_dirs(&dir, parent)?;
        }
        std::fs::write(&path, &f.contents).map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
        // Explicitly, so the umask cannot change the mode the class asked for.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(|e| err(format!("cannot set the mode of {}: {e}", path.display())))?;
    }

    let tmp = target.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&dir_name, &tmp).map_err(|e| err(format!("cannot create {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, target.join(DATA))
        .map_err(|e| err(format!("cannot swap {} into place: {e}", target.join(DATA).display())))?;

    let tops: BTreeSet<&str> = files.iter().filter_map(|f| f.path.split('/').next()).collect();
    for top in &tops {
        let link = target.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(top), &link)
                .map_err(|e| err(format!("cannot create {}: {e}", link.display())))?;
        }
    }
    for old in old_links.iter().filter(|n| !tops.contains(n.as_str())) {
        let _ = std::fs::remove_file(target.join(old));
    }
    if let Some(old) = old_dir.filter(|o| o.as_os_str() != dir_name.as_str()) {
        let _ = std::fs::remove_dir_all(target.join(old));
    }
    Ok(())
}

/// Returns the top-level symlinks of an earlier write, or an error if the
/// directory holds anything else.
fn check_layout(target: &Path) -> io::Result<Vec<String>> {
    let mut links = Vec::new();
    let entries = std::fs::read_dir(target).map_err(|e| err(format!("cannot list {}: {e}", target.display())))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        let through_data = std::fs::read_link(entry.path())
            .map(|t| t.starts_with(DATA))
            .unwrap_or(false);
        if !through_data {
            return Err(err(format!(
                "{} already contains {name:?}, which an earlier mount did not write: use an empty or new directory",
                target.display()
            )));
        }
        links.push(name);
    }
    Ok(links)
}

fn make_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

fn make_dirs(root: &Path, dir: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut d = dir.to_path_buf();
    while d != root && !d.exists() {
        missing.push(d.clone());
        if !d.pop() {
            break;
        }
    }
    for m in missing.iter().rev() {
        make_dir(m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, mode: u32, contents: &str) -> OutFile {
        OutFile {
            path: path.to_string(),
            mode,
            contents: contents.as_bytes().to_vec(),
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_modes_and_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("mount");
        write_atomic(&t, &[file("a", 0o600, "one"), file("nested/b", 0o640, "two")]).unwrap();
        assert_eq!(std::fs::read_to_string(t.join("a")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(t.join("nested/b")).unwrap(), "two");
        assert_eq!(mode(&t.join("a")), 0o600);
        assert_eq!(mode(&t.join("nested/b")), 0o640);
        assert!(std::fs::symlink_metadata(t.join("a")).unwrap().file_type().is_symlink());
        let first = std::fs::read_link(t.join(DATA)).unwrap();

        // A second write replaces the set: `a` changes, `nested` goes, `c` comes.
        write_atomic(&t, &[file("a", 0o400, "three"), file("c", 0o644, "four")]).unwrap();
        assert_eq!(std::fs::read_to_string(t.join("a")).unwrap(), "three");
        assert_eq!(mode(&t.join("a")), 0o400);
        assert!(!t.join("nested").exists());
        assert!(!t.join(&first).exists(), "the old data directory is removed");
        let names: BTreeSet<String> = std::fs::read_dir(&t)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .collect();
        assert_eq!(names, ["a", "c"].into_iter().map(String::from).collect());
    }

    #[test]
    fn a_directory_with_other_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious"), "x").unwrap();
        let e = write_atomic(dir.path(), &[file("a", 0o644, "1")]).unwrap_err();
        assert!(e.to_string().contains("\"precious\""), "{e}");
        assert_eq!(std::fs::read_to_string(dir.path().join("precious")).unwrap(), "x");
        assert!(write_atomic(dir.path(), &[file("../a", 0o644, "1")]).is_err());
    }
}
