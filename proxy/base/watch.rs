//! Watching files for changes: a debounced tick per burst of changes in a
//! set of directories, and the directories to watch for a set of files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

/// Watches `dirs` and sends a tick (debounced) whenever something in them changes.
/// The returned watcher must be kept alive.
///
/// A watch on a directory reached through a symlink (`policies -> wt/abc`,
/// as git-sync lays a checkout out) is on the directory the link pointed to
/// when it was set: swapping the link changes nothing there. So for every
/// symlink on a watched directory's path, the directory holding the link is
/// watched too, for events on the link itself.
///
/// Events carry absolute paths, so the directories are compared made
/// absolute: a relative `policies` never matched `/srv/policies/x.cedar`.
pub fn watch(
    dirs: &[PathBuf],
    debounce: Duration,
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .map(|d| crate::base::paths::absolute(d))
        .collect();
    let dirs = dirs.as_slice();
    let links: Vec<PathBuf> = dirs.iter().flat_map(|d| symlinks_on(d)).collect();
    let link_dirs: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = links
            .iter()
            .filter_map(|l| l.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty() && !dirs.contains(p))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let watched = dirs.to_vec();
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let relevant = ev.paths.is_empty()
                || ev
                    .paths
                    .iter()
                    .any(|p| links.contains(p) || watched.iter().any(|d| p.starts_with(d)));
            if !ev.kind.is_access() && relevant {
                let _ = raw_tx.send(());
            }
        }
    })?;
    for d in dirs.iter().chain(&link_dirs) {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Let a burst of events (several files swapped) settle, then reload once.
            tokio::time::sleep(debounce).await;
            while raw_rx.try_recv().is_ok() {}
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok((watcher, rx))
}

/// `path` and its ancestors that are symlinks.
fn symlinks_on(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .filter(|a| {
            !a.as_os_str().is_empty()
                && std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink())
        })
        .map(Path::to_path_buf)
        .collect()
}

/// Directories to watch for a set of files and directories: a directory
/// itself, a file's parent (where atomic swaps happen).
pub fn dirs_of(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            if p.is_dir() {
                p.clone()
            } else {
                match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                }
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swap_link(link: &Path, to: &str) {
        let tmp = link.with_extension("tmp");
        std::os::unix::fs::symlink(to, &tmp).expect("symlink");
        std::fs::rename(&tmp, link).expect("atomic swap");
    }

    /// git-sync's layout: the configured directory is a symlink to one
    /// checkout, swapped to the next one, the old one removed later. Before,
    /// the watch stayed on the first checkout: the first swap went unseen
    /// (the removal of the old checkout triggered a late reload), and every
    /// later one too.
    #[tokio::test]
    async fn swapping_a_symlinked_directory_is_seen_each_time() {
        let root = tempfile::tempdir().expect("tempdir");
        for v in ["v1", "v2", "v3"] {
            std::fs::create_dir(root.path().join(v)).expect("mkdir");
            std::fs::write(root.path().join(v).join("p.cedar"), v).expect("write");
        }
        let link = root.path().join("current");
        std::os::unix::fs::symlink("v1", &link).expect("symlink");
        let (_w, mut ticks) =
            watch(std::slice::from_ref(&link), Duration::from_millis(10)).expect("watch");
        for v in ["v2", "v3"] {
            swap_link(&link, v);
            tokio::time::timeout(Duration::from_secs(5), ticks.recv())
                .await
                .unwrap_or_else(|_| panic!("the swap to {v} was not seen"))
                .expect("tick");
        }
        // Unrelated files beside the link do not count.
        std::fs::write(root.path().join("audit.log"), "x").expect("write");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), ticks.recv())
                .await
                .is_err(),
            "a change beside the link counted"
        );
    }
}
