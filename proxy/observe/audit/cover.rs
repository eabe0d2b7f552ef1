//! Which lines of a trail the expected heads vouch for. A trail holds one
//! chain per start from seq 0 (a file sink's trail one; the stdout of
//! several processes one each). A head is looked for in every chain, by its
//! `seq` and its hash, and vouches for the lines of the chain it is found
//! in, up to it: the chain links each of them to it. It says nothing of
//! another chain's lines (anyone can start a chain from seq 0), nor of the
//! lines after it.

use std::collections::HashMap;

use super::verify::Place;
use super::*;

/// What became of one expected head, line by line.
#[derive(Debug, Default, Clone)]
struct Found {
    /// The chain (0: the trail's first) whose line at its `seq` holds its
    /// hash.
    matched: Option<u64>,
    /// The first line at its `seq` with another hash, and that hash, in a
    /// chain where no head was found; and in one where a head was (this
    /// head is then not that chain's, unless the trail has no other).
    differs: Option<(Place, String)>,
    differs_elsewhere: Option<(Place, String)>,
}

/// A span of lines no head covers: its first and last line and their
/// `seq`, and its chain.
type Span = (Place, u64, Place, u64, u64);

/// The expected heads, looked for as the lines go by.
pub(super) struct Cover<'a> {
    anchors: &'a [Anchor],
    /// `seq` → the heads with a hash at it.
    watch: HashMap<u64, Vec<usize>>,
    found: Vec<Found>,
    /// The trail's first line.
    first: Option<Place>,
    /// The chain being read (0: the trail's first).
    chain: u64,
    /// Its last line so far, and the first one no head covers yet.
    last: Option<(Place, u64)>,
    open: Option<(Place, u64)>,
    /// Whether a head was found in it, and the heads its lines differ from.
    matched_here: bool,
    differs_here: Vec<(usize, Place, String)>,
    spans: Vec<Span>,
    left_off: u64,
}

impl<'a> Cover<'a> {
    pub(super) fn new(anchors: &'a [Anchor]) -> Cover<'a> {
        let mut watch: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, a) in anchors.iter().enumerate() {
            if a.hash.is_some() {
                watch.entry(a.seq).or_default().push(i);
            }
        }
        Cover {
            anchors,
            watch,
            found: vec![Found::default(); anchors.len()],
            first: None,
            chain: 0,
            last: None,
            open: None,
            matched_here: false,
            differs_here: Vec::new(),
            spans: Vec::new(),
            left_off: 0,
        }
    }

    /// A line that chains on (`restart`: it starts a new chain).
    pub(super) fn line(&mut self, place: Place, seq: u64, chain: &str, restart: bool) {
        if self.anchors.is_empty() {
            return;
        }
        if restart {
            self.close();
            self.chain += 1;
        }
        self.first.get_or_insert(place);
        self.last = Some((place, seq));
        self.open.get_or_insert((place, seq));
        let Some(heads) = self.watch.get(&seq) else {
            return;
        };
        for &i in heads {
            if self.anchors[i].hash.as_deref() == Some(chain) {
                self.found[i].matched = Some(self.chain);
                self.matched_here = true;
                // This line and every line of its chain before it.
                self.open = None;
            } else {
                self.differs_here.push((i, place, chain.to_string()));
            }
        }
    }

    /// The chain being read ends: where its lines differ from a head, and
    /// its lines after its last head found, a span no head covers.
    fn close(&mut self) {
        for (i, place, chain) in self.differs_here.drain(..) {
            let f = &mut self.found[i];
            let slot = if self.matched_here {
                &mut f.differs_elsewhere
            } else {
                &mut f.differs
            };
            slot.get_or_insert((place, chain));
        }
        self.matched_here = false;
        let (Some((from, first_seq)), Some((to, last_seq))) = (self.open.take(), self.last) else {
            return;
        };
        if self.spans.len() < UNCOVERED_LISTED {
            self.spans.push((from, first_seq, to, last_seq, self.chain));
        } else {
            self.left_off += 1;
        }
    }

    /// The spans no head covers, once every line was read; how many more.
    pub(super) fn finish(&mut self, names: &[String]) -> (Vec<Uncovered>, u64) {
        self.close();
        let spans = self
            .spans
            .iter()
            .map(|&(from, first_seq, to, last_seq, chain)| Uncovered {
                from: from.show(names),
                to: to.show(names),
                first_seq,
                last_seq,
                chain: chain + 1,
            })
            .collect();
        (spans, self.left_off)
    }

    /// The chain head `i` was found in: where a line holds its hash, or
    /// the first chain when it is the `prev` the trail's first line names.
    fn found_in(&self, i: usize, v: &Verified) -> Option<u64> {
        let a = &self.anchors[i];
        let named_first = a.hash.is_some()
            && v.first_prev == a.hash
            && v.first_seq.and_then(|f| f.checked_sub(1)) == Some(a.seq);
        self.found[i].matched.or(named_first.then_some(0))
    }

    /// Each head against the trail `v`, in the order given: the first
    /// that is not found, and why.
    pub(super) fn check(&self, v: &Verified, names: &[String]) -> Result<(), VerifyError> {
        for (i, a) in self.anchors.iter().enumerate() {
            let Some(last) = v.last_seq else {
                return Err(VerifyError::Empty { expected: a.seq });
            };
            let Some(expected) = &a.hash else {
                // By its number alone: the trail's last chain reaches it.
                if last < a.seq {
                    return Err(VerifyError::Short {
                        last,
                        expected: a.seq,
                    });
                }
                continue;
            };
            if self.found_in(i, v).is_some() {
                continue;
            }
            let just_before = v.first_seq.and_then(|f| f.checked_sub(1)) == Some(a.seq);
            let differs = |at: Place, found: &String| VerifyError::Differs {
                at: at.show(names),
                seq: a.seq,
                found: found.clone(),
                expected: expected.clone(),
            };
            let f = &self.found[i];
            match (&f.differs, &f.differs_elsewhere) {
                (Some((at, found)), _) => return Err(differs(*at, found)),
                // One chain: a head found in it, and this one not (a cut,
                // and the trail written on).
                (None, Some((at, found))) if v.restarts == 0 => return Err(differs(*at, found)),
                (None, Some(_)) => {
                    return Err(VerifyError::InNoChain {
                        seq: a.seq,
                        expected: expected.clone(),
                        chains: v.restarts + 1,
                    })
                }
                (None, None) => {}
            }
            if let (true, Some(first), Some(prev)) = (just_before, self.first, &v.first_prev) {
                return Err(VerifyError::Differs {
                    at: format!("{} (the `prev` it names)", first.show(names)),
                    seq: a.seq,
                    found: prev.clone(),
                    expected: expected.clone(),
                });
            }
            if v.first_seq.is_some_and(|f| a.seq < f) {
                // Rotated away with its file: vouched for by a newer head
                // found in the same (the first) chain, or not at all.
                let newer_found = self
                    .anchors
                    .iter()
                    .enumerate()
                    .any(|(j, b)| b.seq > a.seq && self.found_in(j, v) == Some(0));
                if newer_found {
                    continue;
                }
                return Err(VerifyError::NotCovered {
                    seq: a.seq,
                    first: v.first_seq.unwrap_or(0),
                });
            }
            return Err(VerifyError::Short {
                last,
                expected: a.seq,
            });
        }
        Ok(())
    }
}
