//! What `conform_json` and `conform_csv` share: a masker with a quiet
//! conformance checker, fed whole and in chunks, judged against what the
//! target's reference finds in the body.

use serde_json::Value;

use super::mask::Masker;
use crate::decision::fields::conformance::{FieldCheck, LogicalType};
use crate::decision::fields::{FieldSpec, Mask, Mode, Shape};
use crate::model::conformance::{Kind, Kinds};

/// What a reference makes of a body.
pub(super) enum Reference {
    /// Masking alone refuses it (or it is not of its format): it fails.
    Refused,
    /// Beyond what the reference models (e.g. nested past the scanner's
    /// depth): only fed whole and in chunks alike.
    Beyond,
    /// It masks, and these are the violations in it.
    Finds(Kinds),
}

/// Feeds `body` to the masker `make` builds for a mode, whole and in chunks
/// of `step` (0: whole), under `mode`: the output and the kinds are the
/// same both ways; then, by `reference`, a refused body fails, and one that
/// masks is judged: under `observe` it passes with exactly the reference's
/// kinds; under `enforce` it fails exactly when the reference finds any,
/// else its output is `observe`'s.
pub(super) fn judge<M: Masker>(
    body: &[u8],
    step: usize,
    mode: Mode,
    make: impl Fn(Mode) -> M,
    reference: impl FnOnce() -> Reference,
) {
    let run = |step: usize, mode: Mode| {
        let mut m = make(mode);
        let mut out = Ok(Vec::new());
        for chunk in body.chunks(if step == 0 { body.len().max(1) } else { step }) {
            match (m.feed(chunk), &mut out) {
                (Ok(made), Ok(all)) => all.extend(made),
                (Err(e), _) => {
                    out = Err(e);
                    break;
                }
                _ => {}
            }
        }
        if let Ok(all) = &mut out {
            match m.finish() {
                Ok(made) => all.extend(made),
                Err(e) => out = Err(e),
            }
        }
        (out, m.kinds())
    };
    let (whole, found) = run(0, mode);
    let (chunked, found_chunked) = run(step, mode);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert!(a == b, "fed in chunks of {step}, the output differs"),
        (Err(_), Err(_)) => {}
        _ => panic!("fed whole: {whole:?}; in chunks of {step}: {chunked:?}"),
    }
    if whole.is_ok() || mode == Mode::Observe {
        assert!(
            found == found_chunked,
            "whole found {found:?}, in chunks of {step} {found_chunked:?}"
        );
    }
    let want = match reference() {
        Reference::Refused => {
            assert!(whole.is_err(), "masking refuses it, the masker sent it");
            return;
        }
        Reference::Beyond => return,
        Reference::Finds(want) => want,
    };
    let show = |k: Kinds| k.iter().map(Kind::as_str).collect::<Vec<_>>();
    match mode {
        Mode::Observe => {
            assert!(whole.is_ok(), "observed, but the body fails: {whole:?}");
            assert!(
                found == want,
                "the checker found {:?}, the reference {:?}",
                show(found),
                show(want)
            );
        }
        Mode::Enforce => {
            assert!(
                whole.is_err() != want.is_empty(),
                "enforced: the reference finds {:?}, the body {}",
                show(want),
                if whole.is_ok() { "passes" } else { "fails" }
            );
            if whole.is_ok() {
                let (observed, _) = run(0, Mode::Observe);
                assert!(
                    observed == whole,
                    "enforced and observed, the output differs"
                );
            }
        }
    }
}

/// `mask_json`'s field spec with a check (and the type it names).
pub(super) fn spec(
    name: &str,
    path: &str,
    parent: Option<usize>,
    shape: Shape,
    check: FieldCheck,
) -> FieldSpec {
    FieldSpec {
        logical_type: check.ty.map(|t| t.as_str().to_string()),
        check,
        ..super::mask::spec(name, path, parent, shape)
    }
}

pub(super) fn check(ty: Option<LogicalType>, required: bool, valid: &[Value]) -> FieldCheck {
    FieldCheck {
        ty,
        required,
        valid: (!valid.is_empty()).then(|| valid.to_vec().into_boxed_slice()),
    }
}

/// The `(field's index, mask)` of each of the four `hideable` fields whose
/// bit is set in `bits`.
pub(super) fn hidden(bits: u8, hideable: [(usize, Mask); 4]) -> Vec<(usize, Mask)> {
    (0..4)
        .filter(|bit| bits & (1 << bit) != 0)
        .map(|bit| hideable[bit])
        .collect()
}
