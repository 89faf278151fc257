//! Files at rest: what the server keeps on disk (its data directory, the database, the audit
//! file, runpacks) is readable by the account it runs as and nobody else. Directories are
//! created `0700` and files `0600`, and a directory or file found with wider permissions is
//! narrowed when the server opens it, as the evidence, decisions and audit trail it holds are
//! the tenants' (ADR 0013).

use std::fs::OpenOptions;
use std::path::Path;

/// The mode of every directory the server creates.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// The mode of every file the server creates.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parent with mode `0700`, and narrows `dir` itself to `0700`
/// when it exists with wider permissions. Existing parents are left alone: they may be shared
/// (`/var/lib`).
///
/// # Errors
/// When a directory cannot be created or its permissions set.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)?;
    narrow(dir, true)
}

/// Options that create a file with mode `0600` (an existing file keeps its mode: pass it to
/// [`narrow_file`]).
#[must_use]
pub fn private_file_options() -> OpenOptions {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
}

/// Narrows an existing file to `0600` when it is wider.
///
/// # Errors
/// When its permissions cannot be read or set.
pub fn narrow_file(file: &Path) -> std::io::Result<()> {
    narrow(file, false)
}

#[cfg(unix)]
fn narrow(path: &Path, dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if dir { DIR_MODE } else { FILE_MODE };
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn narrow(_path: &Path, _dir: bool) -> std::io::Result<()> {
    Ok(())
}

/// Syncs a directory, so an entry just created or renamed in it survives a crash.
///
/// # Errors
/// When the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_are_created_and_narrowed_to_the_owner() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b/c");
        create_private_dir_all(&nested).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.path().join(dir)), 0o700, "{dir}");
        }
        let wide = root.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir_all(&wide).unwrap();
        assert_eq!(mode(&wide), 0o700);
        // Narrowing never widens.
        let narrow_dir = root.path().join("narrow");
        std::fs::create_dir(&narrow_dir).unwrap();
        std::fs::set_permissions(&narrow_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        create_private_dir_all(&narrow_dir).unwrap();
        assert_eq!(mode(&narrow_dir), 0o500);
    }

    #[test]
    fn files_are_created_and_narrowed_to_the_owner() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("f");
        private_file_options()
            .create(true)
            .write(true)
            .open(&file)
            .unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        narrow_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        sync_dir(root.path()).unwrap();
    }
}
