//! openssl s_client, and the TLS alerts it reports.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::wait_within;
use crate::setup::*;

/// openssl s_client against the data port; `input` goes to its stdin,
/// which then stays open until it exits or 60 s pass (then it is killed).
pub(crate) fn s_client(
    env: &Env,
    who: Option<&str>,
    args: &[&str],
    input: &str,
) -> (Option<i32>, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(env.mg.data.to_string())
        .arg("-servername")
        .arg("localhost")
        .arg("-CAfile")
        .arg(env.pki.path("ca.pem"));
    if let Some(who) = who {
        cmd.arg("-cert")
            .arg(env.pki.path(&format!("{who}.pem")))
            .arg("-key")
            .arg(env.pki.path(&format!("{who}-key.pem")));
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(input.as_bytes());
    // Every case expects openssl to give up by itself; the deadline only
    // bounds a hang.
    let code = match wait_within(&mut child, Duration::from_secs(60)) {
        Some(status) => status.code(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    drop(stdin);
    let mut text = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut text);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut text);
    (code, text)
}

/// The alert number openssl reports receiving ("SSL alert number N").
pub(crate) fn alert_number(text: &str) -> Option<u8> {
    text.split("SSL alert number ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

pub(crate) const HANDSHAKE_FAILURE: u8 = 40;
pub(crate) const DECODE_ERROR: u8 = 50;
pub(crate) const PROTOCOL_VERSION: u8 = 70;
