//! Audit-chain verification.

use super::*;

/// Writes arbitrary files (the input split at 0xFF bytes, at most four, the
/// first byte's low bits choosing the mode) and verifies them in order. With
/// bit 1 every line that has a chain field gets the chain its content and
/// `prev` call for, so that the checks past the hash are reached too; bit 2
/// allows restarts. Never a panic; a chain that verifies ends in a complete
/// line, lists each older file that ends torn (a crash's mark), has no more
/// events than lines, and restarts only where they are allowed.
pub fn audit_verify(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir("audit-verify");
    let mut paths = Vec::new();
    let mut lines = 0u64;
    let mut complete = Vec::new();
    for (i, content) in rest.split(|b| *b == 0xff).take(4).enumerate() {
        let content = if mode & 1 == 1 {
            rechain(content)
        } else {
            content.to_vec()
        };
        lines += content.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        complete.push(content.is_empty() || content.last() == Some(&b'\n'));
        let path = dir.join(format!("audit.{i}"));
        std::fs::write(&path, &content).expect("write");
        paths.push(path);
    }
    let options = crate::observe::audit::Options {
        allow_restarts: mode & 2 == 2,
    };
    if let Ok(v) = crate::observe::audit::verify_with(&paths, options) {
        let (newest, older) = complete.split_last().unwrap_or((&true, &[]));
        assert!(*newest, "a torn newest file verified: {v:?}");
        let torn_older = older.iter().filter(|c| !**c).count();
        assert_eq!(v.torn.len(), torn_older, "{v:?}");
        assert!(v.events <= lines, "{v:?} from {lines} lines");
        assert_eq!(v.first_seq.is_some(), v.last_seq.is_some());
        assert!(options.allow_restarts || v.restarts == 0, "{v:?}");
    }
}

/// Recomputes each line's chain field from its content and the chain it
/// continues (its own `prev`, else the line before's chain).
pub(super) fn rechain(content: &[u8]) -> Vec<u8> {
    const FIELD: &[u8] = b",\"chain\":\"";
    let mut running = crate::observe::audit::GENESIS.to_string();
    let mut out = Vec::with_capacity(content.len());
    let mut pieces = content.split(|b| *b == b'\n').peekable();
    while let Some(line) = pieces.next() {
        let mut line = line.to_vec();
        if let Some(at) = line.windows(FIELD.len()).rposition(|w| w == FIELD) {
            let tail = at + FIELD.len();
            if line.len() == tail + 66 && line.ends_with(b"\"}") {
                let prev = serde_json::from_slice::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("prev")?.as_str().map(String::from))
                    .unwrap_or_else(|| running.clone());
                let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                ctx.update(prev.as_bytes());
                ctx.update(&line[..at]);
                ctx.update(b"}");
                let chain = crate::base::hex::hex(ctx.finish().as_ref());
                line[tail..tail + 64].copy_from_slice(chain.as_bytes());
                running = chain;
            }
        }
        out.extend_from_slice(&line);
        if pieces.peek().is_some() {
            out.push(b'\n');
        }
    }
    out
}

/// Files written by the real audit writer: events with awkward paths, a
/// rotation every 4 KiB, and a second writer that resumes the chain.
/// Oldest first, as `meshgate audit verify` takes them (public for seeding
/// the `audit_verify` corpus).
pub fn audit_golden() -> &'static [(String, Vec<u8>)] {
    static GOLDEN: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        use crate::observe::audit::{Audit, AuditConfig, FullMode, SinkKind};
        use std::time::{Duration, UNIX_EPOCH};
        // The node name is in every line: fixed, so that positions in the
        // committed inputs mean the same bytes on every machine.
        std::env::set_var("NODE_NAME", "fuzz-node");
        let dir = scratch_dir("audit-golden");
        let file = dir.join("audit.log");
        let config = AuditConfig {
            sink: SinkKind::File,
            file: Some(file.clone()),
            max_file_bytes: 4096,
            retain: 20,
            queue: 64,
            when_full: FullMode::Block,
            max_wait: Duration::from_secs(10),
            flush_interval: Duration::from_millis(1),
            checkpoint_interval: Duration::from_secs(60),
        };
        let principal: Principal = "spiffe://acme.example/ns/finance/sa/reporting"
            .parse()
            .expect("principal");
        let conn = std::sync::Arc::new(crate::model::connection::ConnInfo::new(
            crate::model::identity::PeerIdentity {
                principal_header: http::HeaderValue::from_static(
                    "spiffe://acme.example/ns/finance/sa/reporting",
                ),
                principal,
                xfcc: http::HeaderValue::from_static("Hash=00"),
                cert_sha256: "00".into(),
                not_after: std::time::SystemTime::UNIX_EPOCH,
            },
            "127.0.0.1:40000".parse().expect("addr"),
            "TLSv1.3",
        ));
        let user = std::sync::Arc::new(crate::decision::jwt::User {
            id: "https://idp.test|al\"ice".into(),
            issuer: "https://idp.test".into(),
            subject: "al\"ice".into(),
            groups: vec!["finance".into()],
            scopes: vec![],
            attributes: vec![],
            expires_at: u64::MAX,
        });
        let paths = [
            "/orders/1",
            "/orders/%2F",
            "/a b\"\n{\"seq\":0}",
            "/caf\u{e9}/\u{1F600}",
            "/\u{0}\u{1b}[31m\r\n",
            "/ledger/summary",
            "/orders/42/items/7",
            "/x\\y",
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for round in 0..2u64 {
            let (audit, writer) =
                Audit::start(&config, crate::observe::metrics::Metrics::new().audit)
                    .expect("audit starts")
                    .expect("audit on");
            rt.block_on(async {
                for i in 0..12u64 {
                    let slot = audit.slot().await.expect("slot").expect("a place");
                    slot.send(crate::observe::audit::Event {
                        time: UNIX_EPOCH + Duration::from_secs(1_780_000_000 + round * 100 + i),
                        request_id: http::HeaderValue::from_static("req-0123"),
                        trace_id: [i as u8; 16],
                        conn: conn.clone(),
                        user: (i % 3 == 0).then(|| user.clone()),
                        tier: None,
                        outcome: None,
                        policy_version: Some("v1".into()),
                        method: if i % 2 == 0 {
                            Method::GET
                        } else {
                            Method::POST
                        },
                        path: paths[(i as usize) % paths.len()].to_string(),
                        decision: "no_route",
                        error: Some("no_route"),
                        status: 404,
                        grpc_status: None,
                        upstream: None,
                        duration: Duration::from_micros(12 + i),
                        bytes_in: i,
                        bytes_out: 10 * i,
                        complete: i % 5 != 4,
                        reason: None,
                        violations: Default::default(),
                    });
                }
                assert!(audit.flush(Duration::from_secs(10)).await, "audit flush");
            });
            drop(audit);
            assert!(writer.join(Duration::from_secs(10)), "audit writer ends");
        }
        let mut files = Vec::new();
        for n in (1..=20).rev() {
            let p = dir.join(format!("audit.log.{n}"));
            if let Ok(b) = std::fs::read(&p) {
                files.push((format!("audit.log.{n}"), b));
            }
        }
        files.push((
            "audit.log".to_string(),
            std::fs::read(&file).expect("audit.log"),
        ));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(files.len() >= 3, "the golden files rotate");
        files
    })
}

/// The golden files written once into this process's scratch directory.
pub(super) fn audit_mutation_dir() -> &'static (std::path::PathBuf, Vec<std::path::PathBuf>) {
    static DIR: OnceLock<(std::path::PathBuf, Vec<std::path::PathBuf>)> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("audit-mutation");
        let paths: Vec<_> = audit_golden()
            .iter()
            .map(|(name, bytes)| {
                let p = dir.join(name);
                std::fs::write(&p, bytes).expect("write");
                p
            })
            .collect();
        let v = crate::observe::audit::verify(&paths).expect("the writer's files verify");
        assert_eq!(v.events, 24);
        (dir, paths)
    })
}

/// The real writer's files with one byte replaced, inserted or deleted
/// (input: operation, position as 4 little-endian bytes, byte): verify
/// reports a break at exactly that file and line, unless the byte was
/// replaced by itself. Where the change leaves an older file ending in a
/// fragment that is no event, it reads as a crash's torn line: a byte put
/// after its last line feed verifies (listed as torn), and its last line
/// feed replaced makes the next file the break, at its first line (it does
/// not go on from the line before the fragment, as it would after a crash).
pub fn audit_mutation(data: &[u8]) {
    let [op, p0, p1, p2, p3, byte, ..] = *data else {
        return;
    };
    let golden = audit_golden();
    let (_, paths) = audit_mutation_dir();
    let total: usize = golden.iter().map(|(_, b)| b.len() + 1).sum();
    let mut pos = u32::from_le_bytes([p0, p1, p2, p3]) as usize % total;
    let mut which = 0;
    while pos > golden[which].1.len() {
        pos -= golden[which].1.len() + 1;
        which += 1;
    }
    let original = &golden[which].1;
    let mut mutated = original.clone();
    let op = op % 3;
    let no_op = match op {
        0 if pos < original.len() => {
            mutated[pos] = byte;
            original[pos] == byte
        }
        1 | 0 => {
            mutated.insert(pos, byte);
            false
        }
        _ if pos < original.len() => {
            mutated.remove(pos);
            false
        }
        _ => return,
    };
    let mut line = 1 + original[..pos].iter().filter(|b| **b == b'\n').count();
    if op == 1 && byte == b'\n' && original.get(pos) == Some(&b'\n') {
        // A newline put before a line's own: the line stays whole and the
        // empty line after it is the break.
        line += 1;
    }
    let older = which + 1 < golden.len();
    // A line with JSON's whitespace after it still reads as an event.
    let unreadable = !matches!(byte, b' ' | b'\t' | b'\r' | b'\n');
    // (At the end of a file, a replace is an insert.)
    let crash_mark = older && byte != b'\n' && op != 2 && pos == original.len();
    let mut at = (which, line);
    if older && unreadable && op == 0 && pos + 1 == original.len() {
        let next = (which + 1..golden.len()).find(|&i| !golden[i].1.is_empty());
        at = (next.unwrap_or(which), 1);
    }
    std::fs::write(&paths[which], &mutated).expect("write");
    let result = crate::observe::audit::verify(paths);
    std::fs::write(&paths[which], original).expect("restore");
    let place = |(file, line): (usize, usize)| (paths[file].display().to_string(), line);
    match result {
        Ok(v) if crash_mark => assert_eq!(v.torn, [format!("{}:{}", place(at).0, at.1)]),
        Ok(v) => assert!(
            no_op,
            "{} byte {pos} (op {op}, {byte:#04x}) changed and the files verify: {v:?}",
            golden[which].0
        ),
        Err(brk) => {
            assert!(!no_op, "unchanged files break: {brk}");
            assert!(!crash_mark, "a crash's torn line breaks: {brk}");
            assert_eq!(
                (brk.file, brk.line),
                place(at),
                "{} byte {pos}",
                golden[which].0
            );
        }
    }
}
