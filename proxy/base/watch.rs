//! Watching files for changes: a debounced tick per burst of changes to a
//! set of files and directories, and
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

/// A path to watch. A directory's entries count only when their names end
/// in one of `suffixes` (none given: every entry), or begin with `..` (a
/// Kubernetes volume's `..data` and the generations it points to): a swap
/// file or notes beside the policies wake nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub suffixes: &'static [&'static str],
}

impl Target {
    /// A directory whose files ending in one of `suffixes` are read.
    pub fn dir(path: PathBuf, suffixes: &'static [&'static str]) -> Target {
        Target { path, suffixes }
    }
}

impl From<PathBuf> for Target {
    fn from(path: PathBuf) -> Target {
        Target {
            path,
            suffixes: &[],
        }
    }
}

/// One watched set: what it watches, and the watch now armed.
struct Set<T> {
    tag: T,
    targets: Vec<Target>,
    debounce: Duration,
    /// Kept alive: dropping a watcher ends its watch.
    watcher: notify::RecommendedWatcher,
    ticks: mpsc::Receiver<()>,
}

/// Sets of files and directories watched, each with its own debounce and
/// tag, and SIGHUP: what a process that reloads on either waits on.
pub struct Changes<T> {
    sets: Vec<Set<T>>,
    hangup: Option<Signal>,
}

impl<T: Copy + PartialEq> Changes<T> {
    /// SIGHUP alone, until sets are added with `watch`. Without a SIGHUP
    /// handler (it could not be installed: logged) only files count.
    pub fn new() -> Changes<T> {
        let hangup = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP"))
            .ok();
        Changes {
            sets: Vec::new(),
            hangup,
        }
    }

    /// Also watches `paths`, files and directories (see [`watch`]), a burst
    /// of changes there reported once as `Change::Files(tag)`.
    pub fn watch<P: Clone + Into<Target>>(
        mut self,
        tag: T,
        paths: &[P],
        debounce: Duration,
    ) -> Result<Changes<T>, notify::Error> {
        let targets: Vec<Target> = paths.iter().cloned().map(Into::into).collect();
        let (watcher, ticks) = watch(&targets, debounce)?;
        self.sets.push(Set {
            tag,
            targets,
            debounce,
            watcher,
            ticks,
        });
        Ok(self)
    }

    /// Sets the watches of the sets `change` names (every set for SIGHUP)
    /// again, from the paths as they are now: a watched directory removed
    /// and made again, or a link on the way now leading elsewhere, is
    /// watched where it is now. Call it on each change, before reading the
    /// files: a change after this is seen by the new watch, one before is
    /// read. If a set cannot be watched again (inotify refuses another
    /// instance or watch), its previous watch stays and a warning is logged.
    pub fn rearm(&mut self, change: Change<T>) {
        for set in &mut self.sets {
            if let Change::Files(tag) = change {
                if tag != set.tag {
                    continue;
                }
            }
            match watch(&set.targets, set.debounce) {
                Ok((watcher, ticks)) => {
                    set.watcher = watcher;
                    set.ticks = ticks;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    paths = ?set.targets.iter().map(|t| t.path.display().to_string()).collect::<Vec<_>>(),
                    "cannot watch the files again; keeping the previous watch (SIGHUP forces a reload)"
                ),
            }
        }
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
        for set in &mut self.sets {
            match set.ticks.poll_recv(cx) {
                Poll::Ready(Some(())) => return Poll::Ready(Some(Change::Files(set.tag))),
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

impl<T: Copy + PartialEq> Default for Changes<T> {
    fn default() -> Self {
        Changes::new()
    }
}

/// Watches `paths`, files and directories, and sends a tick (debounced)
/// whenever one of them changes: a directory, when an entry that counts
/// (see [`Target`]) changes, or the directory itself is removed or renamed
/// (while it is gone, the nearest directory on its path that is there is
/// watched for the name on the way, so its return counts too: see
/// [`Changes::rearm`]); a
/// file, when it does (written, or replaced by a rename over it). A file is
/// watched through its directory, where atomic replacements happen, but the
/// other files there do not count: an audit log beside a key file must not
/// reload the key at every event it writes. The returned watcher must be
/// kept alive.
///
/// The symlinks met on the way to a path when the watch is set count too,
/// and the directory holding each is watched for events on the link itself:
/// git-sync swaps a link to a new checkout (`policies -> wt/abc`). So do the
/// `..`-prefixed entries beside a watched file, whenever they appear: the
/// kubelet and csi-driver-spiffe swap a volume's `..data` link, through
/// which each of its files points (`tls.crt -> ..data/tls.crt`). A watch on
/// a directory reached through a link stays on the directory it pointed to
/// when set.
///
/// Directories are watched, and events compared, by their paths on disk
/// (symlinks resolved): inotify reports a directory's events under one name
/// only, whichever it was last watched by, so `/var/run/secrets` and
/// `/run/secrets` must not both be used. Relative paths are made absolute
/// first.
pub fn watch(
    paths: &[Target],
    debounce: Duration,
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let mut interest = Interest::default();
    // Watched or the watch fails; watched if it can be (a link's directory).
    let (mut dirs, mut also) = (Vec::new(), Vec::new());
    for t in paths {
        let p = crate::base::paths::absolute(&t.path);
        for link in links_through(&p) {
            also.extend(link.parent().map(Path::to_path_buf));
            interest.exact.push(link);
        }
        if p.is_dir() {
            // Its own removal or rename is an event of its own (the set is
            // then armed again, on its parent while it is gone).
            let real = std::fs::canonicalize(&p).unwrap_or(p);
            dirs.push(real.clone());
            interest.under.push((real, t.suffixes));
            continue;
        }
        let entry = on_disk(&p);
        if let Some(parent) = entry.parent() {
            dirs.push(parent.to_path_buf());
            interest.beside.push(parent.to_path_buf());
        }
        // A file that is a link to a file elsewhere: where it leads, too.
        if let Ok(target) = std::fs::canonicalize(&p) {
            if target != entry {
                also.extend(target.parent().map(Path::to_path_buf));
                interest.exact.push(target);
            }
        }
        interest.exact.push(entry);
    }
    for v in [
        &mut dirs,
        &mut also,
        &mut interest.exact,
        &mut interest.beside,
    ] {
        v.retain(|d| !d.as_os_str().is_empty());
        v.sort();
        v.dedup();
    }
    // A directory that is gone (removed, a volume being remade) is watched
    // through the nearest one that is there, for the name on the way to it:
    // its return wakes the set, which is then armed on it again.
    for d in &mut dirs {
        if let Some((there, next)) = nearest_existing(d) {
            interest.exact.push(next);
            *d = there;
        }
    }
    dirs.sort();
    dirs.dedup();
    // A watched directory's own removal or rename counts whatever it was
    // watched for (a file's directory moved away, the nearest one there
    // removed in its turn): the set is then armed again where things are.
    interest.exact.extend(dirs.iter().cloned());
    also.retain(|d| !dirs.contains(d));
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let relevant = ev.paths.is_empty() || ev.paths.iter().any(|p| interest.counts(p));
            if !ev.kind.is_access() && relevant {
                let _ = raw_tx.send(());
            }
        }
    })?;
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    for d in &also {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch a directory holding a symlink or a directory on a watched path; a swap of that link, or the directory made again, is seen only on SIGHUP");
        }
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

/// Which event paths count, all paths on disk.
#[derive(Default)]
struct Interest {
    /// Watched files, the symlinks on the way to a watched path, and where
    /// a watched file that is a link leads.
    exact: Vec<PathBuf>,
    /// Watched directories: the directory itself, and the entries in it
    /// whose names end in one of the suffixes (none: every entry) or begin
    /// with `..`.
    under: Vec<(PathBuf, &'static [&'static str])>,
    /// Directories of watched files: their `..`-prefixed entries (a
    /// volume's `..data` and the generations it points to).
    beside: Vec<PathBuf>,
}

impl Interest {
    fn counts(&self, p: &Path) -> bool {
        let dotdot = p
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b".."));
        let read = |suffixes: &[&str]| {
            suffixes.is_empty()
                || dotdot
                || p.file_name().is_some_and(|n| {
                    suffixes
                        .iter()
                        .any(|s| n.as_encoded_bytes().ends_with(s.as_bytes()))
                })
        };
        self.exact.iter().any(|e| e == p)
            || self
                .under
                .iter()
                .any(|(d, suffixes)| p == d || (p.starts_with(d) && read(suffixes)))
            || (dotdot
                && p.parent()
                    .is_some_and(|d| self.beside.iter().any(|b| b == d)))
    }
}

/// For a directory `d` that does not exist: its nearest ancestor that
/// does, and the entry there on the way to `d`. `None` when `d` exists.
fn nearest_existing(d: &Path) -> Option<(PathBuf, PathBuf)> {
    if d.is_dir() {
        return None;
    }
    let mut next = d;
    let mut there = d.parent()?;
    while !there.is_dir() {
        next = there;
        there = there.parent()?;
    }
    Some((there.to_path_buf(), next.to_path_buf()))
}

/// `path` (absolute) with its directory's symlinks resolved, but not its
/// own last component: where its directory entry is on disk.
fn on_disk(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// The symlinks met while resolving `path` (absolute), outermost first:
/// those on its ancestors, then those on the way from each link's target.
fn links_through(path: &Path) -> Vec<PathBuf> {
    use std::path::Component;
    let mut links = Vec::new();
    // Resolved so far: a path free of symlinks and of `..`.
    let mut done = PathBuf::new();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    let push = |rest: &mut Vec<std::ffi::OsString>, done: &mut PathBuf, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::RootDir | Component::Prefix(_) => {
                    *done = PathBuf::from("/");
                }
                other => rest.push(other.as_os_str().to_os_string()),
            }
        }
    };
    push(&mut rest, &mut done, path);
    // A loop of links ends here rather than never.
    let mut hops = 40;
    while let Some(name) = rest.pop() {
        if name == "." {
            continue;
        }
        if name == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&name);
        let Ok(target) = std::fs::read_link(&next) else {
            done = next;
            continue;
        };
        hops -= 1;
        if hops == 0 {
            break;
        }
        links.push(next);
        if target.is_absolute() {
            done = PathBuf::new();
        }
        push(&mut rest, &mut done, &target);
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain paths, every entry of a directory counting.
    fn watch(
        paths: &[PathBuf],
        debounce: Duration,
    ) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), notify::Error> {
        let targets: Vec<Target> = paths.iter().cloned().map(Target::from).collect();
        super::watch(&targets, debounce)
    }

    /// Waits for the next change, at most 5 s.
    async fn next_change(changes: &mut Changes<char>, what: &str) -> Change<char> {
        tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .unwrap_or_else(|_| panic!("{what} was not seen"))
            .expect("a change")
    }

    /// `rm -rf` of a watched directory, then a copy put back, then an edit:
    /// each is seen, each change re-arming the watch. Before, the watch
    /// stayed on the removed directory: the copy and every later edit
    /// went unseen (a SIGHUP reloaded, but later edits were still unseen).
    #[tokio::test]
    async fn a_directory_removed_and_made_again_is_watched_again() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("domains/finance");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("p.cedar"), "one").expect("write");
        let mut changes = Changes::new()
            .watch(
                'p',
                &[Target::dir(dir.clone(), &[".cedar"])],
                Duration::from_millis(20),
            )
            .expect("watch");
        std::fs::remove_dir_all(&dir).expect("rm -rf");
        let c = next_change(&mut changes, "the removal").await;
        changes.rearm(c);
        std::fs::create_dir(&dir).expect("mkdir again");
        let c = next_change(&mut changes, "the directory made again").await;
        changes.rearm(c);
        std::fs::write(dir.join("p.cedar"), "two").expect("write");
        let c = next_change(&mut changes, "the copy's file").await;
        changes.rearm(c);
        std::fs::write(dir.join("p.cedar"), "three").expect("edit");
        assert_eq!(
            next_change(&mut changes, "an edit after").await,
            Change::Files('p')
        );
    }

    /// A watched file's directory removed with its parent, and made again
    /// (a certificate volume remade): the nearest directory there is
    /// watched meanwhile, so the return wakes the set, and the file is
    /// watched again.
    #[tokio::test]
    async fn a_files_directory_removed_with_its_parent_and_made_again_is_watched_again() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("run/certs");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let cert = dir.join("server.pem");
        std::fs::write(&cert, "one").expect("write");
        let mut changes = Changes::new()
            .watch('t', std::slice::from_ref(&cert), Duration::from_millis(20))
            .expect("watch");
        std::fs::remove_dir_all(root.path().join("run")).expect("rm -rf");
        let c = next_change(&mut changes, "the removal").await;
        changes.rearm(c);
        std::fs::create_dir_all(&dir).expect("mkdir again");
        let c = next_change(&mut changes, "the directories made again").await;
        changes.rearm(c);
        std::fs::write(&cert, "two").expect("write");
        let c = next_change(&mut changes, "the file written again").await;
        changes.rearm(c);
        std::fs::write(&cert, "three").expect("edit");
        assert_eq!(
            next_change(&mut changes, "an edit after").await,
            Change::Files('t')
        );
    }

    /// A policy directory's swap files and notes wake nothing; its policies
    /// and its volume's `..data` swap do. Before, any write there reloaded
    /// (each a full snapshot build).
    #[tokio::test]
    async fn only_the_files_a_source_reads_count_in_its_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("policies");
        std::fs::create_dir(&dir).expect("mkdir");
        let mut changes = Changes::new()
            .watch(
                'p',
                &[Target::dir(dir.clone(), &[".cedar", ".links.json"])],
                Duration::from_millis(20),
            )
            .expect("watch");
        for name in ["notes.txt", ".p.cedar.swp", "p.cedar~", "4913"] {
            std::fs::write(dir.join(name), "x").expect("write");
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(300), changes.next())
                .await
                .is_err(),
            "a file no source reads counted"
        );
        for (what, name) in [("a policy", "p.cedar"), ("links", "t.links.json")] {
            std::fs::write(dir.join(name), "x").expect("write");
            next_change(&mut changes, what).await;
        }
        std::os::unix::fs::symlink("..g1", dir.join("..data_tmp")).expect("symlink");
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
        next_change(&mut changes, "the ..data swap").await;
    }

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

    /// A key file beside an audit log: the log's writes do not count; the
    /// file's own replacement and its volume's `..data` swap do.
    #[tokio::test]
    async fn a_file_counts_its_own_changes_and_its_links_not_its_neighbours() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path();
        for (g, text) in [("..g1", "one"), ("..g2", "two")] {
            std::fs::create_dir(dir.join(g)).expect("mkdir");
            std::fs::write(dir.join(g).join("hash.key"), text).expect("write");
        }
        std::os::unix::fs::symlink("..g1", dir.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/hash.key", dir.join("hash.key")).expect("symlink");
        std::fs::write(dir.join("plain.key"), "k").expect("write");
        let (_w, mut ticks) = watch(
            &[dir.join("hash.key"), dir.join("plain.key")],
            Duration::from_millis(10),
        )
        .expect("watch");
        std::fs::write(dir.join("audit.log"), "event").expect("write");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), ticks.recv())
                .await
                .is_err(),
            "a neighbour's write counted"
        );
        drop((_w, ticks));
        // A watch of its own for each change: a late tick of one cannot
        // pass for the next.
        for change in ["swap ..data", "write plain.key", "rename over plain.key"] {
            let (_w, mut ticks) = watch(
                &[dir.join("hash.key"), dir.join("plain.key")],
                Duration::from_millis(10),
            )
            .expect("watch");
            match change {
                "swap ..data" => {
                    std::os::unix::fs::symlink("..g2", dir.join("..data_tmp")).expect("symlink");
                    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("rename");
                }
                "write plain.key" => std::fs::write(dir.join("plain.key"), "k2").expect("write"),
                _ => {
                    std::fs::write(dir.join("plain.key.new"), "k3").expect("write");
                    std::fs::rename(dir.join("plain.key.new"), dir.join("plain.key"))
                        .expect("rename");
                }
            }
            tokio::time::timeout(Duration::from_secs(5), ticks.recv())
                .await
                .unwrap_or_else(|_| panic!("{change} was not seen"))
                .expect("tick");
        }
    }

    /// A volume reached under two names (a symlinked parent whose name sorts
    /// after its target, as `/var/run` -> `/run`, and a path through `..`):
    /// inotify reports the directory's events under one of them only.
    #[tokio::test]
    async fn a_data_swap_is_seen_whatever_name_the_volume_is_reached_by() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path();
        let vol = dir.join("run/secrets");
        for g in ["..g1", "..g2"] {
            std::fs::create_dir_all(vol.join(g)).expect("mkdir");
            std::fs::write(vol.join(g).join("tls.crt"), g).expect("write");
        }
        symlink("..g1", vol.join("..data")).expect("symlink");
        symlink("..data/tls.crt", vol.join("tls.crt")).expect("symlink");
        std::fs::create_dir(dir.join("var")).expect("mkdir");
        symlink("../run", dir.join("var/run")).expect("symlink");
        std::fs::create_dir(dir.join("conf")).expect("mkdir");
        // A watch of its own for each swap: a late tick of one cannot pass
        // for the next.
        for g in ["..g2", "..g1"] {
            let (_w, mut ticks) = watch(
                &[
                    dir.join("var/run/secrets/tls.crt"),
                    dir.join("conf/../run/secrets/tls.crt"),
                ],
                Duration::from_millis(10),
            )
            .expect("watch");
            symlink(g, vol.join("..data_tmp")).expect("symlink");
            std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).expect("rename");
            tokio::time::timeout(Duration::from_secs(5), ticks.recv())
                .await
                .unwrap_or_else(|_| panic!("the swap to {g} was not seen"))
                .expect("tick");
        }
    }

    #[test]
    fn the_links_through_a_path_are_its_ancestors_and_their_targets() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(dir.join("wt/abc/..g1")).expect("mkdir");
        std::os::unix::fs::symlink("wt/abc", dir.join("repo")).expect("symlink");
        std::os::unix::fs::symlink("..g1", dir.join("wt/abc/..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/k", dir.join("wt/abc/k")).expect("symlink");
        assert_eq!(
            links_through(&dir.join("repo/k")),
            [
                dir.join("repo"),
                dir.join("wt/abc/k"),
                dir.join("wt/abc/..data")
            ]
        );
        assert_eq!(
            links_through(&dir.join("wt/abc/..g1")),
            Vec::<PathBuf>::new()
        );
        // A loop ends.
        std::os::unix::fs::symlink("loop", dir.join("loop")).expect("symlink");
        assert_eq!(links_through(&dir.join("loop")).len(), 39);
    }
}
