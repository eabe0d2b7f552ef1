//! A real redis-server for the shared-quota tests, killed on drop, and a
//! minimal client speaking RESP over a `TcpStream` (no redis-cli needed).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{require_tool, unused_port};

/// A real redis-server on a loopback port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
    pub url: String,
}

impl RedisServer {
    /// On a free port. `None` (with a loud message) when redis-server is
    /// missing outside CI.
    pub fn start(dir: &Path) -> Option<RedisServer> {
        RedisServer::start_on(dir, unused_port())
    }

    /// On `port` (a sidecar may have been told it before Redis runs).
    pub fn start_on(dir: &Path, port: u16) -> Option<RedisServer> {
        if !require_tool("redis-server") {
            return None;
        }
        let mut server = RedisServer {
            child: None,
            dir: dir.to_path_buf(),
            port,
            url: format!("redis://127.0.0.1:{port}"),
        };
        server.run();
        Some(server)
    }

    /// Starts redis-server on `self.port` and waits for its ready line.
    fn run(&mut self) {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let stdout = child.stdout.take().expect("stdout");
        // Owned by `self` before waiting, so a failed start is still killed.
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("redis-server ready");
    }

    /// Kills the server (its data goes with it: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// A new client connection.
    pub fn client(&self) -> Resp {
        Resp::connect(self.port)
    }

    /// Scripts run so far (EVALSHA and EVAL calls).
    pub fn scripts_run(&self) -> u64 {
        self.client().scripts_run()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Scripts the Redis at `url` ran (EVALSHA and EVAL calls), from `INFO
/// commandstats`.
pub fn scripts_run(url: &str) -> u64 {
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("redis://host:port");
    Resp::connect(port).scripts_run()
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string.
    Bulk(Option<Vec<u8>>),
    Array(Vec<RespValue>),
}

impl RespValue {
    /// The reply as text (simple and bulk strings).
    pub fn text(&self) -> String {
        match self {
            RespValue::Simple(s) => s.clone(),
            RespValue::Bulk(Some(b)) => String::from_utf8_lossy(b).to_string(),
            other => panic!("not a string reply: {other:?}"),
        }
    }
}

/// One client connection to Redis, speaking RESP2; every read has a deadline.
pub struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Resp {
    pub fn connect(port: u16) -> Resp {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let writer = stream.try_clone().expect("clone stream");
        Resp {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Sends one command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> RespValue {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("write to redis");
        self.read()
    }

    /// A command whose reply must be `+OK`.
    pub fn ok(&mut self, args: &[&str]) {
        assert_eq!(self.cmd(args), RespValue::Simple("OK".into()), "{args:?}");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read from redis");
        assert!(n > 0, "redis closed the connection");
        line.trim_end_matches("\r\n").to_string()
    }

    fn read(&mut self) -> RespValue {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        let number = || rest.parse::<i64>().expect("RESP length");
        match kind {
            "+" => RespValue::Simple(rest.to_string()),
            "-" => RespValue::Error(rest.to_string()),
            ":" => RespValue::Int(number()),
            "$" if number() < 0 => RespValue::Bulk(None),
            "$" => {
                let mut buf = vec![0; number() as usize + 2];
                std::io::Read::read_exact(&mut self.reader, &mut buf).expect("bulk");
                buf.truncate(buf.len() - 2);
                RespValue::Bulk(Some(buf))
            }
            "*" if number() < 0 => RespValue::Array(Vec::new()),
            "*" => RespValue::Array((0..number()).map(|_| self.read()).collect()),
            _ => panic!("not RESP: {line}"),
        }
    }

    /// `field` of `INFO section` (`blocked_clients` of `clients`), as text.
    pub fn info(&mut self, section: &str, field: &str) -> Option<String> {
        let text = self.cmd(&["INFO", section]).text();
        let prefix = format!("{field}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
    }

    /// Scripts run so far (EVALSHA and EVAL calls), from `INFO commandstats`.
    pub fn scripts_run(&mut self) -> u64 {
        let text = self.cmd(&["INFO", "commandstats"]).text();
        text.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split([':', ','])
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    }
}
