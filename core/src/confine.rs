//! Paths confined to a root directory: relative, made of plain components only, and never
//! crossing a symlink. Runpack stores, runpack readers and the `json` provider use them, so a
//! caller-supplied path can never reach outside the directory an operator configured.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathRefusal {
    /// The path is absolute.
    #[error("path {0:?} must be relative")]
    Absolute(String),
    /// The path is empty or has `..`, `.` or a prefix component.
    #[error("path {0:?} must be relative, without '..' or '.'")]
    NotPlain(String),
    /// The path names its file in another form than `a/b` (`a//b`, `a/./b`, `a/`).
    #[error(
        "path {0:?} must be in normal form: one slash between segments, no '.' segment, no trailing slash"
    )]
    NotNormal(String),
    /// The path crosses a symlink under the root.
    #[error("path {0:?} crosses a symlink")]
    Symlink(String),
}

/// Checks that `path` is relative with only plain components (no `..`, `.` or root).
pub(crate) fn check_relative(path: &str) -> Result<(), PathRefusal> {
    let relative = Path::new(path);
    if relative.is_absolute() {
        return Err(PathRefusal::Absolute(path.to_owned()));
    }
    if path.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(PathRefusal::NotPlain(path.to_owned()));
    }
    Ok(())
}

/// Checks that `path` is relative and written in its one normal form: segments separated by
/// single slashes, none empty, `.` or `..`. `a//b`, `a/./b` and `a/` name the same file as
/// `a/b` and `a`, so a list of paths that must name distinct files refuses them.
pub(crate) fn check_normal(path: &str) -> Result<(), PathRefusal> {
    check_relative(path)?;
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(PathRefusal::NotNormal(path.to_owned()));
    }
    Ok(())
}

/// Checks `path` with [`check_relative`] and that it crosses no symlink under `root`; returns
/// the full path.
pub(crate) fn confined(root: &Path, path: &str) -> Result<PathBuf, PathRefusal> {
    check_relative(path)?;
    let mut full = root.to_path_buf();
    for component in Path::new(path).components() {
        full.push(component);
        if std::fs::symlink_metadata(&full).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(PathRefusal::Symlink(path.to_owned()));
        }
    }
    Ok(full)
}
