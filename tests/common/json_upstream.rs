//! A product server answering fixed bodies by path: `(path, content type,
//! body)`, or with a `Content-Encoding` too (sent whatever the request's
//! `Accept-Encoding`, as a server that ignores it would); one request per
//! connection (`Connection: close`), 404 for any other path. For tests of
//! what the response stage does to a body. A path ending in `/cut` is sent
//! its body under a `Content-Length` twice as long, and the connection then
//! closed: an upstream that dies mid-body. A path ending in `/chunked` is
//! sent its body chunked, under a wrong `Content-Length: 0` beside the
//! `Transfer-Encoding`, with `Cache-Control: public` and trailers (a digest
//! and a field holding `trailer-secret@example.com`): what a careless or
//! hostile server may send. [`FixedUpstream::start_raw`] answers a path
//! with a status line and header lines of the test's own (a `304` with the
//! unmasked body's `ETag`, a `500` text page holding a record).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct FixedUpstream {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One fixed answer.
struct Fixed {
    path: String,
    ctype: String,
    encoding: Option<String>,
    body: Vec<u8>,
    /// The status and header lines sent in place of the usual head (the
    /// length and `Connection: close` are added; no length for 204 and 304).
    head: Option<String>,
}

impl FixedUpstream {
    pub fn start(bodies: Vec<(&str, &str, String)>) -> FixedUpstream {
        FixedUpstream::serve(
            bodies
                .into_iter()
                .map(|(p, t, b)| Fixed {
                    path: p.to_string(),
                    ctype: t.to_string(),
                    encoding: None,
                    body: b.into_bytes(),
                    head: None,
                })
                .collect(),
        )
    }

    /// Bodies `(path, content type, content coding, encoded bytes)`; an
    /// empty coding sends no `Content-Encoding`.
    pub fn start_encoded(bodies: Vec<(&str, &str, &str, Vec<u8>)>) -> FixedUpstream {
        FixedUpstream::serve(
            bodies
                .into_iter()
                .map(|(p, t, e, b)| Fixed {
                    path: p.to_string(),
                    ctype: t.to_string(),
                    encoding: (!e.is_empty()).then(|| e.to_string()),
                    body: b,
                    head: None,
                })
                .collect(),
        )
    }

    /// Answers `(path, head, body)`: `head` is the status (`500 Oops`)
    /// and header lines after it, each ended by CRLF (`304 Not
    /// Modified\r\netag: "v1"\r\n`).
    pub fn start_raw(answers: Vec<(&str, &str, String)>) -> FixedUpstream {
        FixedUpstream::serve(
            answers
                .into_iter()
                .map(|(p, h, b)| Fixed {
                    path: p.to_string(),
                    ctype: String::new(),
                    encoding: None,
                    body: b.into_bytes(),
                    head: Some(h.to_string()),
                })
                .collect(),
        )
    }

    fn serve(bodies: Vec<Fixed>) -> FixedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let bodies = Arc::new(bodies);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let bodies = bodies.clone();
                std::thread::spawn(move || answer(conn, &bodies));
            }
        });
        FixedUpstream {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

fn answer(mut conn: TcpStream, bodies: &[Fixed]) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) if h == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let found = bodies.iter().find(|f| f.path == path);
    if let Some(Fixed {
        head: Some(head),
        body,
        ..
    }) = found
    {
        let bodiless = head.starts_with("204") || head.starts_with("304");
        let length = match bodiless {
            true => String::new(),
            false => format!("content-length: {}\r\n", body.len()),
        };
        let _ = write!(conn, "HTTP/1.1 {head}{length}connection: close\r\n\r\n");
        let _ = conn.write_all(body);
        return;
    }
    let (status, ctype, coding, body) = match found {
        Some(f) => (
            "200 OK",
            f.ctype.as_str(),
            f.encoding.as_deref(),
            &f.body[..],
        ),
        None => ("404 Not Found", "text/plain", None, &b"no such body"[..]),
    };
    let declared = if path.ends_with("/cut") {
        2 * body.len()
    } else {
        body.len()
    };
    let coding = coding
        .map(|c| format!("content-encoding: {c}\r\nvary: accept-encoding\r\n"))
        .unwrap_or_default();
    if path.ends_with("/chunked") {
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\ncache-control: public, max-age=600\r\ntrailer: content-digest, x-secret\r\nconnection: close\r\n\r\n{:x}\r\n",
            body.len()
        );
        let _ = conn.write_all(body);
        let _ = write!(
            conn,
            "\r\n0\r\ncontent-digest: sha-256=:AAAA:\r\nx-secret: trailer-secret@example.com\r\n\r\n"
        );
        return;
    }
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\n{coding}content-length: {declared}\r\netag: \"v1\"\r\nconnection: close\r\n\r\n"
    );
    let _ = conn.write_all(body);
}

impl super::Target for FixedUpstream {
    fn target_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FixedUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
