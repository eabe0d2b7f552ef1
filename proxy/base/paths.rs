//! Where configured paths point: every path a configuration file names is
//! made absolute once, when the file is loaded.
//!
//! A relative path would work for reading (the working directory does not
//! change), but not for watching: the file watcher reports absolute paths, so
//! a watch on `policies` never matched an event on `/srv/policies/x.cedar`
//! and edits went unseen until SIGHUP. The paths are made absolute lexically
//! (`std::path::absolute`), never canonicalised: a symlink such as the
//! kubelet's `..data` must stay in the path, or its swap would go unseen.

use std::path::{Path, PathBuf};

/// The absolute directory relative paths of the configuration file `file`
/// are resolved against: the file's own directory.
pub fn dir_of(file: &Path) -> PathBuf {
    absolute(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(working_dir)
}

/// `base` made absolute; an empty `base` is the working directory (relative
/// paths of configuration text that came from no file, `MESHGATE_CONFIG`).
pub fn absolute_dir(base: &Path) -> PathBuf {
    if base.as_os_str().is_empty() {
        working_dir()
    } else {
        absolute(base)
    }
}

/// `path` made absolute against the working directory, without resolving
/// symlinks or `..`.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| working_dir().join(path))
}

/// Makes `path` absolute against `base` when it is relative.
pub fn resolve(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = absolute(&base.join(&*path));
    }
}

/// The working directory, or `/` when it cannot be read (removed under us).
fn working_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_config_file_resolves_against_its_absolute_directory() {
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(dir_of(Path::new("sidecar.yaml")), cwd);
        assert_eq!(dir_of(Path::new("./sidecar.yaml")), cwd);
        assert_eq!(dir_of(Path::new("conf/sidecar.yaml")), cwd.join("conf"));
        assert_eq!(
            dir_of(Path::new("/etc/mg/sidecar.yaml")),
            Path::new("/etc/mg")
        );
        assert_eq!(absolute_dir(Path::new("")), cwd);
    }

    #[test]
    fn relative_paths_become_absolute_and_absolute_ones_stay() {
        let mut p = PathBuf::from("policies/mesh");
        resolve(Path::new("/srv/conf"), &mut p);
        assert_eq!(p, Path::new("/srv/conf/policies/mesh"));
        let mut p = PathBuf::from("./certs/..data/tls.crt");
        resolve(Path::new("/srv"), &mut p);
        // Symlink names such as `..data` are kept as they are.
        assert_eq!(p, Path::new("/srv/certs/..data/tls.crt"));
        let mut p = PathBuf::from("/etc/ca.pem");
        resolve(Path::new("/srv"), &mut p);
        assert_eq!(p, Path::new("/etc/ca.pem"));
    }
}
