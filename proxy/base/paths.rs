//! Where configured paths point: every path a configuration file names is
//! made absolute once, when the file is loaded.
//!
//! A relative path would work for reading (the working directory does not
//! change), but not for watching: the file watcher reports absolute paths, so
//! a watch on `policies` never matched an event on `/srv/policies/x.cedar`
//! and edits went unseen until SIGHUP. The paths are made absolute lexically
//! (`std::path::absolute`), never canonicalised: a symlink such as the
//! kubelet's `..data` must stay in the path, or its swap would go unseen.
//! [`read_whole`] reads files that are replaced together as one generation.

use std::ffi::OsString;
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

/// Where each of `paths` leads on disk, symlinks followed, and for a
/// directory where each of its entries leads: what an atomic replacement
/// changes. git-sync swaps a symlink to a new worktree; a Kubernetes volume
/// swaps the `..data` symlink its files point through. A path's own length
/// and modification time count too: a file written in place while it was
/// read, or a directory whose entries changed, is read again. (A
/// directory's files are checked one by one as they are read: see
/// [`read_file`].)
type Resolution = Vec<(Stamp, Vec<(OsString, Option<PathBuf>)>)>;

/// Where a path leads, how long it is and when it was last modified.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    real: Option<PathBuf>,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> Stamp {
        let meta = std::fs::metadata(path).ok();
        Stamp {
            real: std::fs::canonicalize(path).ok(),
            len: meta.as_ref().map_or(0, std::fs::Metadata::len),
            modified: meta.and_then(|m| m.modified().ok()),
        }
    }
}

fn resolution(paths: &[PathBuf]) -> Resolution {
    paths
        .iter()
        .map(|p| {
            let mut entries: Vec<_> = match std::fs::read_dir(p) {
                Ok(dir) => dir
                    .filter_map(Result::ok)
                    .map(|e| (e.file_name(), std::fs::canonicalize(e.path()).ok()))
                    .collect(),
                Err(_) => Vec::new(),
            };
            entries.sort();
            (Stamp::of(p), entries)
        })
        .collect()
}

/// A file's text, read again when it was written while being read (its
/// length or modification time moved, or the text is not as long as the
/// file): a file saved in place (truncated, then written) could otherwise
/// be taken cut, a policy file without its last `forbid`. Refused after
/// [`READ_ATTEMPTS`] reads. A write that ends after the read is not seen
/// here; its own change event reads the file again.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    utf8(read_file_bytes(path)?)
}

/// [`read_file`] for a file that need not be text (a key, a secret, a
/// certificate in DER or PEM): its bytes, read again when written while
/// being read, refused when it is not a regular file of at most
/// [`MAX_INPUT_BYTES`].
pub fn read_file_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    for _ in 0..READ_ATTEMPTS {
        let before = Stamp::of(path);
        let bytes = read_regular_bytes(path, MAX_INPUT_BYTES)?;
        let after = Stamp::of(path);
        if before == after && bytes.len() as u64 == after.len {
            return Ok(bytes);
        }
    }
    Err(std::io::Error::other(format!(
        "written while being read, {READ_ATTEMPTS} times in a row"
    )))
}

/// Bytes as text, or where they stop being UTF-8.
fn utf8(bytes: Vec<u8>) -> std::io::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "is not UTF-8 text (byte {} is not)",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The largest input file meshgate reads (policies, template links,
/// contracts, the schema, entities, configuration): twice the largest a
/// mesh has been seen to need (10,000 policies in one file, about 2 MB). A
/// policy file this large takes 300-400 MB to build, one long set literal
/// up to about 750 MB; 50,000 declared fields (2.3 MB) took 1.26 GB before
/// the entities of fields were shared.
pub const MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024;

/// The bytes of the regular file at `path`, at most `limit` of them.
/// Opened without blocking (the open of a FIFO with no writer waits for
/// one forever: a reload hung in it), its type and size then read from
/// the descriptor opened (not from the path, which may be swapped since),
/// and read no further than the limit (`/dev/zero` never ends).
pub fn read_regular_bytes(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let (file, meta) = open_regular(path)?;
    let too_large = |len: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "is {len} bytes or more, larger than the {limit} bytes ({} MiB) an input file may be",
                limit / (1024 * 1024)
            ),
        )
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The regular file at `path` (symlinks followed), opened for reading, and
/// what its descriptor says of it (type, size, device and inode). Opened
/// without blocking, so that a FIFO with no writer is refused rather than
/// waited on for ever; anything but a regular file (a FIFO, a device such
/// as `/dev/zero`, a directory) is refused.
pub fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "is {}, not a regular file; only regular files are read",
                kind_of(&meta.file_type())
            ),
        ));
    }
    Ok((file, meta))
}

/// What a file that is not a regular file is, for a message.
fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// How many times at most [`read_whole`] reads, when the files are
/// replaced while it reads them.
pub const READ_ATTEMPTS: usize = 5;

/// The paths replaced during every one of [`read_whole`]'s reads; shown,
/// the reason (the same for each path).
#[derive(Debug, PartialEq, Eq)]
pub struct Replaced(pub Vec<PathBuf>);

impl std::fmt::Display for Replaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replaced while being read, {READ_ATTEMPTS} times in a row"
        )
    }
}

/// Runs `read`, which reads the files at `paths`, until they were not
/// replaced while it ran, at most [`READ_ATTEMPTS`] times: a read that
/// began before a swap and ended after it (a directory listed in the old
/// generation, its files read in the new, or one file of each) is not
/// returned.
pub fn read_whole<T>(paths: &[PathBuf], mut read: impl FnMut() -> T) -> Result<T, Replaced> {
    let mut before = resolution(paths);
    let mut changed = Vec::new();
    for _ in 0..READ_ATTEMPTS {
        let value = read();
        let after = resolution(paths);
        if after == before {
            return Ok(value);
        }
        changed = paths
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| b != a)
            .map(|(p, _)| p.clone())
            .collect();
        before = after;
    }
    Err(Replaced(changed))
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

    #[test]
    fn files_read_across_a_data_link_swap_are_read_again_and_a_quiet_read_once() {
        use std::os::unix::fs::symlink;
        let t = tempfile::tempdir().expect("tempdir");
        let vol = t.path();
        for (generation, text) in [("..g1", "old"), ("..g2", "new")] {
            std::fs::create_dir(vol.join(generation)).expect("mkdir");
            for f in ["tls.crt", "tls.key"] {
                std::fs::write(vol.join(generation).join(f), text).expect("write");
            }
        }
        symlink("..g1", vol.join("..data")).expect("symlink");
        let files: Vec<PathBuf> = ["tls.crt", "tls.key"]
            .iter()
            .map(|f| {
                symlink(format!("..data/{f}"), vol.join(f)).expect("symlink");
                vol.join(f)
            })
            .collect();
        let read = |p: &PathBuf| std::fs::read_to_string(p).expect("read");
        let mut calls = 0;
        let pair = read_whole(&files, || {
            calls += 1;
            let crt = read(&files[0]);
            if calls == 1 {
                symlink("..g2", vol.join("..tmp")).expect("symlink");
                std::fs::rename(vol.join("..tmp"), vol.join("..data")).expect("rename");
            }
            (crt, read(&files[1]))
        });
        assert_eq!(pair, Ok(("new".to_string(), "new".to_string())));
        assert_eq!(calls, 2);
        let mut calls = 0;
        assert_eq!(read_whole(&files, || calls += 1), Ok(()));
        assert_eq!(calls, 1);
    }

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let t = tempfile::tempdir().expect("tempdir");
        let fifo = t.path().join("entities.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        // No writer: the open does not wait for one.
        let e = read_file(&fifo).expect_err("a FIFO");
        assert_eq!(
            e.to_string(),
            "is a FIFO, not a regular file; only regular files are read"
        );
        let e = read_file(Path::new("/dev/zero")).expect_err("a device");
        assert_eq!(
            e.to_string(),
            "is a character device, not a regular file; only regular files are read"
        );
        assert!(read_file(t.path()).is_err());
        let big = t.path().join("big.cedar");
        std::fs::write(&big, "x".repeat(MAX_INPUT_BYTES as usize + 1)).expect("write");
        let e = read_file(&big).expect_err("too large");
        assert_eq!(
            e.to_string(),
            "is 4194305 bytes or more, larger than the 4194304 bytes (4 MiB) an input file may be"
        );
        std::fs::write(&big, "x".repeat(MAX_INPUT_BYTES as usize)).expect("write");
        assert_eq!(read_file(&big).expect("at the limit").len(), 4194304);
        // The bound holds for a file that grows after it was looked at.
        assert!(read_regular_bytes(&big, 10).is_err());
    }

    /// A file written in place while it is read (truncated, then written
    /// again) is read again: the first read may have seen it cut.
    #[test]
    fn a_file_written_in_place_while_read_is_read_again() {
        let t = tempfile::tempdir().expect("tempdir");
        let file = t.path().join("a.cedar");
        std::fs::write(&file, "permit(principal, action, resource);\n").expect("write");
        let paths = [file.clone()];
        let mut calls = 0;
        let text = read_whole(&paths, || {
            calls += 1;
            let text = std::fs::read_to_string(&file).expect("read");
            if calls == 1 {
                // The rest of the file arrives after the read: a longer
                // file, whatever the clock's resolution.
                let whole =
                    "permit(principal, action, resource);\nforbid(principal, action, resource);\n";
                std::fs::write(&file, whole).expect("write");
            }
            text
        });
        assert_eq!(calls, 2);
        assert!(text.expect("read").contains("forbid"));
        assert!(read_file(&file).expect("read").contains("forbid"));
    }
}
