//! The audit trail's tamper evidence and shutdown through the real binary:
//! lines deleted, reordered, inserted and cut from a trail the sidecar
//! wrote (and rotated) are each found by `meshgate audit verify` run as a
//! process, with its exit status and exact message; rotation under
//! concurrent load keeps one event per request across every file; and
//! `timeouts.shutdown_grace` bounds the flush when the sink takes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `meshgate audit verify FILES...`: exit code, stdout, stderr.
fn verify(files: &[&Path]) -> (Option<i32>, String, String) {
    verify_args(&[], files)
}

/// `meshgate audit verify ARGS... FILES...`: exit code, stdout, stderr.
fn verify_args(args: &[&str], files: &[&Path]) -> (Option<i32>, String, String) {
    let out = output_within(
        Command::new(bin())
            .args(["audit", "verify"])
            .args(args)
            .args(files),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `verify` must refuse `files` with exit 1 and exactly this message about
/// line `line` of `at`.
fn refused(files: &[&Path], at: &Path, line: usize, message: &str) {
    let (code, out, err) = verify(files);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out, "", "nothing on stdout");
    assert_eq!(
        err,
        format!("meshgate: {}:{line}: {message}\n", at.display()),
        "{files:?}"
    );
}

/// The trail's files, oldest first: `audit.log.N` .. `audit.log.1`, `audit.log`.
fn trail(file: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| PathBuf::from(format!("{}.{n}", file.display())))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(file.to_path_buf());
    files
}

/// `n` requests on each of `connections` curl connections at once; the
/// `x-request-id` of each response with a 200.
fn load(pki: &Pki, mg: &Meshgate, connections: usize, n: usize) -> Vec<String> {
    let url = mg.url("/headers");
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let mut args = Vec::new();
            for _ in 0..n {
                args.extend([
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %header{x-request-id}\\n",
                    url.as_str(),
                ]);
            }
            let mut cmd = curl_command(pki, Some("reporting"), &args);
            std::thread::spawn(move || cmd.output().expect("curl"))
        })
        .collect();
    let mut ids = Vec::new();
    for t in threads {
        let out = t.join().expect("curl thread");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        for line in text.lines() {
            let (code, id) = line.split_once(' ').unwrap_or((line, ""));
            assert_eq!(code, "200", "{text}");
            assert_eq!(id.len(), 32, "{line}");
            ids.push(id.to_string());
        }
    }
    assert_eq!(ids.len(), connections * n);
    ids
}

fn lines_of(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .expect("read audit file")
        .lines()
        .map(String::from)
        .collect()
}

fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).expect("json line");
    v["seq"].as_u64().expect("seq")
}

/// Writes `lines` (each ended by a newline) to `dir/name`.
fn tampered(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    path
}

/// `line` made into another event: its path changed, its `seq` set, and its
/// chain recomputed after `prev_chain`, as anyone could (SHA-256 needs no
/// secret).
fn forged(line: &str, seq: u64, prev_chain: &str) -> String {
    let old_seq = format!("\"seq\":{},", seq_of(line));
    assert!(line.starts_with(&format!("{{{old_seq}")), "{line}");
    let path = line.find(",\"path\":\"").expect("path field");
    let path_end = path + 9 + line[path + 9..].find('"').expect("end of path");
    let edited = format!(
        "{{\"seq\":{seq},{}/forged{}",
        &line[1 + old_seq.len()..path + 9],
        &line[path_end..]
    );
    let cut = edited.rfind(",\"chain\":\"").expect("chain field");
    let chain = sha256_hex(format!("{prev_chain}{}}}", &edited[..cut]).as_bytes());
    format!("{},\"chain\":\"{chain}\"}}", &edited[..cut])
}

/// A trail the sidecar wrote: 24 events in small files (the minimum size,
/// a few events each), verified clean; its files, oldest first.
fn written_trail(pki: &Pki, up: &Upstream) -> Vec<PathBuf> {
    let file = pki.path("audit.log");
    let mut mg = Meshgate::builder(pki, up)
        .audit_file(&file)
        .audit("max_file_bytes: 4096")
        .audit("retain: 20")
        .start();
    let n = 24;
    load(pki, &mg, 1, n);
    assert!(mg.terminate().success());
    let files = trail(&file);
    assert!(files.len() >= 4, "rotated: {files:?}");
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, out, err) = verify(&refs);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "ok: {n} events, seq 0..{}, 0 reported dropped, 0 chain restart(s); \
             no expected head given: a cut tail cannot be seen (--expect)\n",
            n - 1
        )
    );
    assert_eq!(
        verify(&[&files[1]]).0,
        Some(0),
        "a rotated file verifies alone"
    );
    files
}

/// A line's string member.
fn field(line: &str, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    v[name].as_str().expect(name).to_string()
}

#[test]
fn deleted_reordered_and_inserted_lines_are_each_found_by_audit_verify() {
    let pki = Pki::new();
    let up = Upstream::start();
    let files = written_trail(&pki, &up);
    // A rotated file from the middle of the trail, tampered with in copies.
    let dir = tempfile::tempdir().expect("tempdir");
    let middle = &files[1];
    let lines = lines_of(middle);
    assert!(lines.len() >= 4, "{lines:?}");
    let seq: Vec<u64> = lines.iter().map(|l| seq_of(l)).collect();

    let mut deleted = lines.clone();
    deleted.remove(2);
    let f = tampered(dir.path(), "deleted", &deleted);
    let message = format!(
        "seq {} where {} was expected: 1 line(s) deleted before this one",
        seq[3], seq[2]
    );
    refused(&[&f], &f, 3, &message);

    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    let f = tampered(dir.path(), "reordered", &reordered);
    let message = format!(
        "seq {} where {} was expected, and {} comes later: reordered",
        seq[2], seq[1], seq[1]
    );
    refused(&[&f], &f, 2, &message);

    // A copy of an earlier line inserted further down: the file's first
    // line (which names its `prev`), then one after it.
    let mut copied = lines.clone();
    copied.insert(3, lines[0].clone());
    let f = tampered(dir.path(), "inserted-first", &copied);
    let message = format!(
        "names prev {} but the line before ends at {}: edited or inserted",
        field(&lines[0], "prev"),
        field(&lines[2], "chain")
    );
    refused(&[&f], &f, 4, &message);
    let mut copied = lines.clone();
    copied.insert(3, lines[1].clone());
    let f = tampered(dir.path(), "inserted-copy", &copied);
    let message = format!(
        "seq {} already appeared on line 2: inserted or reordered",
        seq[1]
    );
    refused(&[&f], &f, 4, &message);

    // A forged event chained correctly onto the line before it: the next
    // real line no longer follows.
    let chain_1 = field(&lines[1], "chain");
    let fake = forged(&lines[2], seq[2], &chain_1);
    let f = tampered(
        dir.path(),
        "forged-end",
        &[lines[0].clone(), lines[1].clone(), fake.clone()],
    );
    assert_eq!(verify(&[&f]).0, Some(0), "the forged line chains: {fake}");
    let mut inserted = lines.clone();
    inserted.insert(2, fake);
    let f = tampered(dir.path(), "inserted-forged", &inserted);
    let message = format!(
        "seq {} already appeared on line 3: inserted or reordered",
        seq[2]
    );
    refused(&[&f], &f, 4, &message);
}

#[test]
fn cut_lines_and_missing_or_misordered_files_are_each_found_by_audit_verify() {
    let pki = Pki::new();
    let up = Upstream::start();
    let files = written_trail(&pki, &up);
    let dir = tempfile::tempdir().expect("tempdir");
    let middle = &files[1];
    let lines = lines_of(middle);

    // The last line torn in half, the first lines cut off, the end of a
    // rotated file cut before the next, a file missing, files out of order.
    let mut torn = std::fs::read_to_string(middle).expect("read");
    torn.truncate(torn.len() - 40);
    let f = dir.path().join("torn");
    std::fs::write(&f, &torn).expect("write");
    let message = "incomplete last line (a write cut short, or the line was edited)";
    refused(&[&f], &f, lines.len(), message);

    let f = tampered(dir.path(), "head-cut", &lines[2..]);
    let message = "the file starts mid-chain (no `prev`): lines before it were deleted";
    refused(&[&f], &f, 1, message);

    let next = &files[2];
    let next_first = seq_of(&lines_of(next)[0]);
    let f = tampered(dir.path(), "tail-cut", &lines[..lines.len() - 2]);
    let message = format!(
        "starts at seq {next_first} where {} was expected: the end of the previous \
         file was cut, or a file is missing between them",
        next_first - 2
    );
    refused(&[&f, next], next, 1, &message);

    let first_of_middle = seq_of(&lines[0]);
    let message = format!(
        "starts at seq {} where {first_of_middle} was expected: the end of the previous \
         file was cut, or a file is missing between them",
        next_first
    );
    refused(&[&files[0], next], next, 1, &message);

    let message = "does not continue the chain of the previous file: \
                   they are out of order, or one was edited";
    refused(&[next, middle], middle, 1, message);
}

#[test]
fn a_trail_rotated_under_concurrent_load_holds_one_event_per_request_in_verified_files() {
    let pki = Pki::new();
    let up = Upstream::start();
    let file = pki.path("audit.log");
    // About ten events a file; enough files kept that none is deleted.
    let mut mg = Meshgate::builder(&pki, &up)
        .log_level("info")
        .audit_file(&file)
        .audit("max_file_bytes: 8192")
        .audit("retain: 200")
        .start();
    let (connections, each) = (8, 50);
    let ids = load(&pki, &mg, connections, each);
    assert!(mg.terminate().success());

    let files = trail(&file);
    assert!(
        files.len() >= 20,
        "rotated under load: {} files",
        files.len()
    );
    let mut seen = std::collections::HashMap::new();
    for f in &files {
        // Every file verifies on its own (each names its `prev`)...
        let (code, out, err) = verify(&[f]);
        assert_eq!(code, Some(0), "{}: {out}{err}", f.display());
        for line in lines_of(f) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
            assert_eq!(v["type"], "request", "{line}");
            let id = v["request_id"].as_str().expect("request_id").to_string();
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    // ...and all of them in order, as one chain.
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, out, err) = verify(&refs);
    assert_eq!(code, Some(0), "{err}");
    let n = ids.len();
    assert!(
        out.starts_with(&format!(
            "ok: {n} events, seq 0..{}, 0 reported dropped, 0 chain restart(s);",
            n - 1
        )),
        "{out}"
    );
    // One event per request served, no more, no other.
    assert_eq!(seen.len(), n);
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "request {id}");
    }
}

/// Waits for the sidecar to exit, up to `limit`: its exit status and when
/// it came; `None` (the process killed) when it did not come in time.
fn exit_within(mg: &mut Meshgate, limit: Duration) -> Option<(std::process::ExitStatus, Instant)> {
    let pid = mg.pid();
    let child = &mut mg.child;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let status = child.wait().expect("wait");
            let _ = tx.send((status, Instant::now()));
        });
        let exited = rx.recv_timeout(limit).ok();
        if exited.is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        exited
    })
}

#[test]
fn shutdown_grace_bounds_the_flush_when_the_audit_sink_takes_nothing() {
    let pki = Pki::new();
    let up = Upstream::start();
    let grace = Duration::from_secs(2);
    // The trail goes to stdout, a pipe the test holds and never reads.
    let mut mg = Meshgate::builder(&pki, &up)
        .timeout("shutdown_grace: 2s")
        .stdout_piped()
        .start();
    let stuck = mg.child.stdout.take().expect("stdout");
    // 400 events (~350 KB) into a 64 KiB pipe: the writer blocks, the rest
    // wait in the queue; every request was answered.
    let n = 400;
    load(&pki, &mg, 1, n);
    let written = mg.metric("meshgate_audit_events_total");
    assert!(
        written < n as f64,
        "{written} events written into a full pipe"
    );

    let from = mg.logs.len();
    let term = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &mg.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // Nothing is in flight: the drain ends at once, then the flush waits
    // for the sink for the grace, and no longer.
    let deadline = grace + Duration::from_secs(5);
    let (status, at) = exit_within(&mut mg, deadline).unwrap_or_else(|| {
        panic!(
            "still running {deadline:?} after SIGTERM:\n{}",
            mg.logs.dump()
        )
    });
    let took = at - term;
    assert!(took >= grace, "exited after {took:?}, before the grace");
    // The events it could not write are not lost silently: an error line and
    // a failed exit.
    assert_eq!(status.code(), Some(1), "{}", mg.logs.dump());
    let logged = mg.logs.wait_for(from, Duration::from_secs(5), |l| {
        l.contains("the audit sink did not take the queued events in time")
    });
    assert!(logged.is_some(), "{}", mg.logs.dump());
    let reason = mg.logs.wait_for(from, Duration::from_secs(5), |l| {
        l.starts_with("meshgate: ")
    });
    assert_eq!(
        reason.as_deref(),
        Some(
            "meshgate: the audit sink did not take the queued events within \
             timeouts.shutdown_grace (2s); they were not written"
        ),
        "{}",
        mg.logs.dump()
    );
    drop(stuck);
}

/// `lines` made up again from the genesis: each one's path changed and
/// chained after the one before, as anyone could (SHA-256 needs no secret).
fn invented(lines: &[String]) -> Vec<String> {
    let mut prev = "0".repeat(64);
    let mut out = Vec::new();
    for (seq, line) in lines.iter().enumerate() {
        let fake = forged(line, seq as u64, &prev);
        prev = field(&fake, "chain");
        out.push(fake);
    }
    out
}

/// Defect: any line with `seq` 0 and the all-zero `prev` was taken as a
/// restart, so a made-up file put before a file sink's trail verified (with
/// `--expect`, "reaches the expected head"), and a file given twice (by a
/// symlink) counted its events twice. Failed before the fix: the made-up
/// file verified, `ok: 26 events, …, 1 chain restart(s)`.
#[test]
fn a_restart_is_a_break_unless_allowed_and_no_file_or_chain_is_read_twice() {
    let pki = Pki::new();
    let up = Upstream::start();
    let files = written_trail(&pki, &up);
    let dir = tempfile::tempdir().expect("tempdir");
    // A file made up from the genesis, put before the real trail (whose
    // first line starts from the genesis too).
    let fake = tampered(
        dir.path(),
        "audit.log.99",
        &invented(&lines_of(&files[0])[..2]),
    );
    let mut trail: Vec<&Path> = vec![&fake];
    trail.extend(files.iter().map(PathBuf::as_path));
    let restart = "a new chain starts here (seq 0 from the all-zero `prev`) where seq 2 was \
                   expected: a file sink never starts again (each start goes on from its last \
                   line), so lines before it were replaced, or files of two trails were given; \
                   the stdout of several processes does start again: verify it with \
                   --allow-restarts";
    refused(&trail, &files[0], 1, restart);
    // Allowed, the last head is found in the real chain and vouches for
    // it alone: the made-up lines are named as no head's.
    let newest = lines_of(files.last().expect("a file"));
    let last = newest.last().expect("a line");
    let head = format!("{}:{}", seq_of(last), field(last, "chain"));
    let (code, out, err) = verify_args(&["--allow-restarts", "--expect", &head], &trail);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "ok: 26 events, seq 0..23, 0 reported dropped, 1 chain restart(s); reaches the \
             expected head (seq 23); no expected head covers {}:1..2 (seq 0..1, chain 1 of 2): \
             a rewrite of these lines cannot be seen\n",
            fake.display()
        )
    );

    // The same file twice, by a symlink: refused by its device and inode,
    // restarts allowed or not.
    let link = dir.path().join("audit.log.0");
    std::os::unix::fs::symlink(&files[0], &link).expect("symlink");
    for flags in [&[][..], &["--allow-restarts"][..]] {
        let (code, out, err) = verify_args(flags, &[&link, &files[0]]);
        assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
        assert_eq!(
            err,
            format!(
                "meshgate: {}: is the same file as {} (given twice, or a link to it): each \
                 file of a trail is given once\n",
                files[0].display(),
                link.display()
            )
        );
    }
    // A copy is another file, but its chain starts with the same line.
    let copy = dir.path().join("copy");
    std::fs::copy(&files[0], &copy).expect("copy");
    let (code, _, err) = verify_args(&["--allow-restarts"], &[&copy, &files[0]]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "meshgate: {}:1: this chain starts with the same line as the one at {}:1: a copy \
             of it\n",
            files[0].display(),
            copy.display()
        )
    );
}

/// Defect: in a file before the newest, a last line without its line feed
/// was passed over as torn by a crash when it read as an event with the
/// number due, its chain never checked; and a later file's first line was
/// taken without the `prev` the writer always puts there. Failed before
/// the fix: the edited torn event and the file split by hand verified.
#[test]
fn a_torn_whole_event_must_chain_and_a_later_files_first_line_names_its_prev() {
    let pki = Pki::new();
    let up = Upstream::start();
    let file = pki.path("audit.log");
    let run = |n: usize| {
        let mut mg = Meshgate::builder(&pki, &up).audit_file(&file).start();
        load(&pki, &mg, 1, n);
        assert!(mg.terminate().success());
    };
    // A crash cut the last line's line feed: the sidecar started again
    // rotates the file out and goes on from the line before it.
    run(3);
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, text.strip_suffix('\n').expect("a whole line")).expect("write");
    run(2);
    let rotated = pki.path("audit.log.1");
    let (code, out, err) = verify(&[&rotated, &file]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "ok: 4 events, seq 0..3, 0 reported dropped, 0 chain restart(s), 1 line(s) cut \
             short by a crash and gone on from ({}:3); no expected head given: a cut tail \
             cannot be seen (--expect)\n",
            rotated.display()
        )
    );
    let old = lines_of(&rotated);
    let new = lines_of(&file);
    assert_eq!((old.len(), new.len(), seq_of(&new[0])), (3, 2, 2));

    // The torn event edited: its chain no longer covers it.
    let dir = tempfile::tempdir().expect("tempdir");
    let edited = old[2].replace("\"path\":\"/headers\"", "\"path\":\"/forged\"");
    assert_ne!(edited, old[2]);
    let f = dir.path().join("edited");
    std::fs::write(&f, format!("{}\n{}\n{edited}", old[0], old[1])).expect("write");
    let message = "seq 2: the chain does not match the line: this line (or, if its chain was \
                   rewritten too, the one before it) was edited";
    refused(&[&f, &file], &f, 3, message);

    // The trail split by hand: the later file's first line has no `prev`.
    let whole = [old[0].clone(), old[1].clone(), new[0].clone()];
    let before = tampered(dir.path(), "before", &whole);
    let after = tampered(dir.path(), "after", &new[1..]);
    let message = "the file starts without `prev`, which the writer names on the first line \
                   of every file: lines before it were deleted, or the file was split by hand";
    refused(&[&before, &after], &after, 1, message);

    // The line feed of an older file's last line removed: that line is the
    // break, not the next file's first line.
    let cut = dir.path().join("cut");
    std::fs::write(&cut, whole.join("\n")).expect("write");
    let message = "a whole event without its line feed, and the next file goes on from it: \
                   the line feed was removed (after a crash the next file goes on from the \
                   line before a torn one)";
    refused(&[&cut, &after], &cut, 3, message);
}

/// Defect: verify read each file whole and made a slice of every line
/// before checking any (64 MiB of line feeds took over 1 GiB), read a
/// symlink to /dev/zero until memory ran out, and waited for ever on a
/// FIFO. Failed before the fix: the FIFO hung (killed at the deadline),
/// and under the data limit below both big files ended in an allocation
/// failure (SIGABRT).
#[test]
fn only_regular_files_are_read_line_by_line_within_a_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused_file = |f: &Path, message: &str| {
        let (code, out, err) = verify(&[f]);
        assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
        assert_eq!(err, format!("meshgate: {}: {message}\n", f.display()));
    };
    let fifo = dir.path().join("audit.log");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    refused_file(
        &fifo,
        "cannot read: is a FIFO, not a regular file; only regular files are read",
    );
    let zero = dir.path().join("audit.log.1");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    refused_file(
        &zero,
        "cannot read: is a character device, not a regular file; only regular files are read",
    );

    // A line longer than the bound: refused where it starts.
    let long = dir.path().join("long");
    let mut text = vec![b'x'; 4 * 1024 * 1024 + 1];
    text.push(b'\n');
    std::fs::write(&long, &text).expect("write");
    refused(
        &[&long],
        &long,
        1,
        "a line longer than 4194304 bytes (4 MiB): not one meshgate wrote",
    );

    // Memory: under a data limit of 40 MiB (the binary needs some 22 MiB
    // to start), 64 MiB of line feeds are refused at their first line, and
    // a 64 MiB trail verifies.
    let newlines = dir.path().join("newlines");
    std::fs::write(&newlines, vec![b'\n'; 64 << 20]).expect("write");
    let (code, out, err) = verify_limited(&newlines, 40 << 10);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert_eq!(
        err,
        format!(
            "meshgate: {}:1: not a meshgate audit event (EOF while parsing a value at line 1 \
             column 0): edited or inserted\n",
            newlines.display()
        )
    );
    let big = dir.path().join("big");
    let n = big_trail(&big, 64 << 20);
    let (code, out, err) = verify_limited(&big, 40 << 10);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with(&format!("ok: {n} events, seq 0..{}, ", n - 1)),
        "{out}"
    );
}

/// `meshgate audit verify FILE` with its data segment (heap and anonymous
/// mappings, RLIMIT_DATA) limited to `kib`.
fn verify_limited(file: &Path, kib: u64) -> (Option<i32>, String, String) {
    let out = output_within(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -d {kib} && exec \"$0\" audit verify \"$1\""
            ))
            .arg(bin())
            .arg(file),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Writes a chained trail of about `bytes` to `path`; how many events.
fn big_trail(path: &Path, bytes: usize) -> u64 {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let pad = "p".repeat(160);
    let mut prev = "0".repeat(64);
    let (mut written, mut seq) = (0, 0u64);
    while written < bytes {
        let body = if seq == 0 {
            format!("{{\"seq\":0,\"prev\":\"{prev}\",\"type\":\"request\",\"path\":\"/{pad}\"")
        } else {
            format!("{{\"seq\":{seq},\"type\":\"request\",\"path\":\"/{pad}\"")
        };
        let chain = sha256_hex(format!("{prev}{body}}}").as_bytes());
        let line = format!("{body},\"chain\":\"{chain}\"}}\n");
        out.write_all(line.as_bytes()).expect("write");
        written += line.len();
        prev = chain;
        seq += 1;
    }
    out.flush().expect("flush");
    seq
}
