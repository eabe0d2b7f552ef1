//! Watching files for changes: a debounced tick per burst of changes in a
//! set of directories, the directories to watch for a set of files, and
//! `Changes`, the watched sets and SIGHUP as one stream of reasons to reload.

use std::path::{Path, PathBuf};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// Why to reload: a change in the watched set tagged `T`, or SIGHUP
/// (everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<T> {
    Files(T),
    Hangup,
}

/// Sets of directories watched, each with its own debounce and tag, and
/// SIGHUP: what a process that reloads on either waits on.
pub struct Changes<T> {
    /// Kept alive: dropping a watcher ends its watch.
    watchers: Vec<notify::RecommendedWatcher>,
    sets: Vec<(T, mpsc::Receiver<()>)>,
    hangup: Option<Signal>,
}

impl<T: Copy> Changes<T> {
    /// SIGHUP alone, until sets are added with `watch`. Without a SIGHUP
    /// handler (it could not be installed: logged) only files count.
    pub fn new() -> Changes<T> {
        let hangup = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP"))
            .ok();
        Changes {
            watchers: Vec::new(),
            sets: Vec::new(),
            hangup,
        }
    }

    /// Also watches `dirs` (see `watch`), a burst of changes there reported
    /// once as `Change::Files(tag)`.
    pub fn watch(
        mut self,
        tag: T,
        dirs: &[PathBuf],
        debounce: Duration,
    ) -> Result<Changes<T>, notify::Error> {
        let (watcher, ticks) = watch(dirs, debounce)?;
        self.watchers.push(watcher);
        self.sets.push((tag, ticks));
        Ok(self)
    }

    /// The next reason to reload; `None` once none can come.
    pub async fn next(&mut self) -> Option<Change<T>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Change<T>>> {
        if let Some(hup) = self.hangup.as_mut() {
            match hup.poll_recv(cx) {
                Poll::Ready(Some(())) => return Poll::Ready(Some(Change::Hangup)),
                Poll::Ready(None) => self.hangup = None,
                Poll::Pending => {}
            }
        }
        let mut open = self.hangup.is_some();
        for (tag, ticks) in &mut self.sets {
            match ticks.poll_recv(cx) {
                Poll::Ready(Some(())) => return Poll::Ready(Some(Change::Files(*tag))),
                Poll::Ready(None) => {}
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

impl<T: Copy> Default for Changes<T> {
    fn default() -> Self {
        Changes::new()
    }
}

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

    /// Each set reports its own tag, and nothing else is reported.
    #[tokio::test]
    async fn changes_tell_the_sets_apart() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let mut changes = Changes::new()
            .watch('a', &[a.path().to_path_buf()], Duration::from_millis(50))
            .expect("watch a")
            .watch('b', &[b.path().to_path_buf()], Duration::from_millis(50))
            .expect("watch b");
        for (dir, tag) in [(&b, 'b'), (&a, 'a')] {
            std::fs::write(dir.path().join("x"), "x").expect("write");
            let change = tokio::time::timeout(Duration::from_secs(5), changes.next())
                .await
                .expect("a change in time");
            assert_eq!(change, Some(Change::Files(tag)));
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(300), changes.next())
                .await
                .is_err(),
            "a change reported twice"
        );
    }
}
