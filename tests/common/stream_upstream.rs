//! A product server streaming many generated order records, chunked, for
//! tests of how much memory masking a large response takes:
//! `/orders/big.json?n=N` (a JSON array), `/orders/big.ndjson?n=N` and
//! `/orders/big.csv?n=N`, each record carrying the personal fields of
//! [`super::fields::FIELDS`]; with `&bad=K`, record `K`'s amount is a
//! string (a contract violation, for conformance tests); `&coding=C` sends
//! it compressed in `C` (`gzip`, `deflate`, `br`, `zstd`) as it is
//! generated, whatever the request accepts; `&pad=M` puts M MiB of spaces
//! after the first JSON record (a decompression bomb: spaces compress a
//! thousandfold). One request per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct StreamUpstream {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The personal values every generated record carries.
pub const EMAIL: &str = "ana@example.com";
pub const PHONE: &str = "+49 170 1234567";

/// The CSV header of `/orders/big.csv`.
pub const CSV_HEADER: &str = "id,amount,customer_email,customer_phone,customer_since\n";

/// Record `i` in `format` (`json`, `ndjson`, `csv`), with its separator;
/// its amount a string when `bad`.
fn record(format: &str, i: u64, first: bool, bad: bool) -> String {
    let r = plain_record(format, i, first);
    if bad {
        r.replacen("12.50", "\"12.50\"", 1)
    } else {
        r
    }
}

fn plain_record(format: &str, i: u64, first: bool) -> String {
    match format {
        "csv" => format!("SO-{i},12.50,{EMAIL},{PHONE},2019-04-01\n"),
        _ => {
            let r = format!(
                r#"{{"id": "SO-{i}", "amount": 12.50, "customer_email": "{EMAIL}", "customer_phone": "{PHONE}", "customer_since": "2019-04-01", "shipping": {{"city": "Köln", "street": "Ring 1"}}, "lines": [{{"sku": "X-1", "unit_cost": 3.25}}, {{"sku": "X-2", "unit_cost": 1.75}}]}}"#
            );
            match (format, first) {
                ("ndjson", _) => r + "\n",
                (_, true) => r,
                (_, false) => format!(",\n{r}"),
            }
        }
    }
}

impl StreamUpstream {
    pub fn start() -> StreamUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = answer(conn);
                });
            }
        });
        StreamUpstream {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let n: u64 = param("n").and_then(|v| v.parse().ok()).unwrap_or(1);
    let bad: Option<u64> = param("bad").and_then(|v| v.parse().ok());
    let coding = param("coding");
    let pad: usize = param("pad").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (format, ctype) = match path {
        "/orders/big.json" => ("json", "application/json"),
        "/orders/big.ndjson" => ("ndjson", "application/x-ndjson"),
        "/orders/big.csv" => ("csv", "text/csv"),
        _ => {
            return write!(
                conn,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
        }
    };
    let coded = coding
        .map(|c| format!("content-encoding: {c}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\n{coded}transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )?;
    {
        let mut chunked = Chunked(&mut conn);
        match coding {
            None => records(&mut chunked, format, n, pad, bad)?,
            Some(c) => records(&mut super::coded::encoder(c, chunked), format, n, pad, bad)?,
        }
    }
    write!(conn, "0\r\n\r\n")?;
    conn.flush()
}

/// Writes each buffer it is given as one HTTP/1.1 chunk.
struct Chunked<'a>(&'a mut TcpStream);

impl Write for Chunked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            write!(self.0, "{:x}\r\n", buf.len())?;
            self.0.write_all(buf)?;
            self.0.write_all(b"\r\n")?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `n` records in `format`, written in pieces of about 64 KiB, with `pad`
/// MiB of spaces after the first (JSON), record `bad` a violation.
fn records(
    out: &mut dyn Write,
    format: &str,
    n: u64,
    pad: usize,
    bad: Option<u64>,
) -> std::io::Result<()> {
    let mut chunk = match format {
        "json" => "[".to_string(),
        "csv" => CSV_HEADER.to_string(),
        _ => String::new(),
    };
    for i in 0..n {
        chunk.push_str(&record(format, i, i == 0, bad == Some(i)));
        if i == 0 && pad > 0 {
            out.write_all(chunk.as_bytes())?;
            chunk.clear();
            let spaces = vec![b' '; 1 << 20];
            for _ in 0..pad {
                out.write_all(&spaces)?;
            }
        }
        if chunk.len() >= 64 * 1024 {
            out.write_all(chunk.as_bytes())?;
            chunk.clear();
        }
    }
    if format == "json" {
        chunk.push(']');
    }
    out.write_all(chunk.as_bytes())
}

impl super::Target for StreamUpstream {
    fn target_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StreamUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
