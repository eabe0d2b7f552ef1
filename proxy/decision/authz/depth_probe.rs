//! How the table of `depth.rs` was measured: the stack one step uses on one
//! policy, read as the resident size of the stack of a fresh thread after
//! the step (only the pages a thread has touched are resident). Run one
//! measurement a process, a fresh thread each:
//!
//! ```text
//! MG_PROBE=paren:100:parse cargo test --lib -- depth_probe --ignored --nocapture
//! ```
//!
//! `MG_PROBE=SHAPE:N:STEP`; shapes: `paren`, `set`, `record`, `neg`,
//! `ifnest` (N brackets deep), `or`, `and`, `plus`, `member`, `index`,
//! `if` (chains of N), `bounds` (32 deep around N operators); steps:
//! `parse`, `validate`, `specialise`, `eval`.
//! The cost of a level is the difference of two sizes over their levels.

use std::str::FromStr;

use cedar_policy::{Context, Request, ValidationMode, Validator};

use super::depth::MAX_NESTING;
use super::*;

/// The condition of shape `shape` with `n` levels.
fn condition(shape: &str, n: usize) -> String {
    let chain = |term: &str, op: &str| vec![term; n].join(op);
    match shape {
        "paren" => format!("{}true{}", "(".repeat(n), ")".repeat(n)),
        "set" => format!("{}1{} == [1]", "[".repeat(n), "]".repeat(n)),
        "record" => format!("{}1{} == 1", "{a:".repeat(n), "}".repeat(n)),
        "neg" => format!("{}true{}", "!(".repeat(n), ")".repeat(n)),
        "ifnest" => format!(
            "{}true{}",
            "if (".repeat(n),
            ") then true else false".repeat(n)
        ),
        "or" => chain("context.path == \"x\"", " || "),
        "and" => chain("context.has_user", " && "),
        "plus" => format!("{} == 2", chain("1", " + ")),
        "member" => format!("context{} == 1", ".a".repeat(n)),
        "index" => format!("context{} == 1", "[\"a\"]".repeat(n)),
        "if" => format!("{}true", "if true then true else ".repeat(n)),
        // The deepest policy within both bounds: brackets 32 deep (with
        // `when {`) around N operators, each a level.
        "bounds" => format!(
            "{}{}context.path == \"/orders\"{}",
            "(".repeat(MAX_NESTING - 1),
            "false || ".repeat(n.saturating_sub(2)),
            ")".repeat(MAX_NESTING - 1)
        ),
        other => panic!("no shape {other}"),
    }
}

/// The resident bytes of the stack of the calling thread.
fn resident_stack() -> usize {
    let here = 0u8;
    let at = std::ptr::addr_of!(here) as usize;
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_once(' ').and_then(|(r, _)| r.split_once('-'));
        if let Some((a, b)) = range {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a <= at && at < b;
                continue;
            }
        }
        if let Some(kb) = line.strip_prefix("Rss:").filter(|_| inside) {
            let kb = kb.trim().trim_end_matches(" kB").parse::<usize>();
            return kb.expect("Rss in kB") * 1024;
        }
    }
    0
}

/// Runs `step` on the policy and returns the stack it took.
fn measure(step: &str, text: String) -> usize {
    let example = crate::decision::authz::examples::example_inputs();
    let (schema, _) = Schema::from_cedarschema_str(&example.schema.text).expect("schema");
    let set = PolicySet::from_str(&text).expect("parses");
    let step = step.to_string();
    let run = move || {
        let before = resident_stack();
        let policy = set.policies().next().expect("one policy");
        let uid = |t: &str, id: &str| EntityUid::from_str(&format!("{t}::\"{id}\"")).expect("uid");
        match step.as_str() {
            "parse" => drop(PolicySet::from_str(&text)),
            "validate" => drop(Validator::new(schema).validate(&set, ValidationMode::Strict)),
            "specialise" => drop(index::Specialized::of(policy)),
            "eval" => {
                let context = r#"{"path": "/a", "has_user": false}"#;
                let context = Context::from_json_str(context, None).expect("context");
                let request = Request::new(
                    uid("Mesh::Service", "a"),
                    uid("Mesh::Action", "read"),
                    uid("Mesh::DataProduct", "x"),
                    context,
                    None,
                )
                .expect("request");
                drop(Authorizer::new().is_authorized(&request, &set, &Entities::empty()));
            }
            other => panic!("no step {other}"),
        }
        resident_stack() - before
    };
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(run)
        .expect("thread")
        .join()
        .expect("measured")
}

#[test]
#[ignore = "a measurement: MG_PROBE=SHAPE:N:STEP, see the module"]
fn depth_probe() {
    let probe = std::env::var("MG_PROBE").expect("MG_PROBE=SHAPE:N:STEP");
    let parts: Vec<&str> = probe.split(':').collect();
    let [shape, n, step] = parts[..] else {
        panic!("MG_PROBE=SHAPE:N:STEP, not {probe}")
    };
    let n: usize = n.parse().expect("N");
    let text = format!(
        "@id(\"p\")\npermit (principal, action, resource)\nwhen {{ {} }};",
        condition(shape, n)
    );
    let step = step.to_string();
    // Parsing a deep policy to measure it needs a deep stack too.
    let bytes = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || measure(&step, text))
        .expect("thread")
        .join()
        .expect("measured");
    println!("{probe}: {bytes} bytes of stack");
}
