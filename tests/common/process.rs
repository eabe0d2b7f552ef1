//! Child processes with deadlines: no wait on a child is unbounded. A
//! process that outlives its deadline is killed (SIGKILL) and the test fails
//! with what it printed so far.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a command that should exit by itself may take: a hang guard,
/// not a speed claim. A refused configuration exits in milliseconds, but
/// `promtool test rules` over every committed rule file took over 30 s on
/// the 2-core machine with one core held by stress-ng and builds beside
/// (load average 8): the bound must sit far above the slowest honest run.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(180);

/// Waits for `child` to exit, at most `limit`; None if it has not.
/// Polls with a growing pause (1 ms to 50 ms): std has no wait with a
/// timeout, and a thread blocked in `wait` could not be taken back.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Waits for `child` to exit within `limit`; past it, kills it and fails
/// the test, naming `what`.
pub fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    if let Some(status) = wait_within(child, limit) {
        return status;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not exit within {limit:?}; killed");
}

/// `cmd.output()` with a deadline ([`EXIT_DEADLINE`]): stdin closed, stdout
/// and stderr collected; a process still running at the deadline (a `run`
/// that accepted a configuration it should have refused, say) is killed and
/// the test fails with its output.
pub fn output_within(cmd: &mut Command) -> Output {
    output_within_limit(cmd, EXIT_DEADLINE)
}

/// [`output_within`] with another deadline.
pub fn output_within_limit(cmd: &mut Command, limit: Duration) -> Output {
    output_fed(cmd, None, limit)
}

/// [`output_within_limit`] with `input` written to the command's stdin
/// (then closed); `None`: stdin closed at once.
pub fn output_fed(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        // A thread: a command that fills its stdout before it reads all of
        // its stdin must not block the writer and the readers together.
        let input = input.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&input);
        });
    }
    let what = format!("{cmd:?}");
    output_of(child, limit, &what)
}

/// What a started `child` printed (its stdout and stderr, when piped) and
/// how it exited, waiting at most `limit`; past it the child is killed and
/// the test fails, naming `what`.
pub fn output_of(mut child: Child, limit: Duration, what: &str) -> Output {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let status = wait_within(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The pipes close when the process is gone (it started nothing that
    // keeps them open), so the readers end.
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let Some(status) = status else {
        panic!(
            "{what} did not exit within {limit:?}; killed. stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}
