//! Malformed input for the fuzz tests: bytes recorded from real sessions (or statements edxapp sends), mutated as
//! a broken or hostile peer would send them — bits flipped, bytes replaced by the values parsers branch on,
//! frame lengths changed, pieces inserted, cut out, repeated or cut off, and packets of several sessions run
//! together — and fully arbitrary bytes besides.
//!
//! The runner is proptest's, driven by hand with a fixed seed and case count so that `cargo test` stays bounded
//! and repeatable; `PROPTEST_CASES` and `PROPTEST_RNG_SEED` run more cases or other ones (docs/reliability.md,
//! "Malformed input").

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, RngSeed, TestError, TestRunner};

/// The seed of a bounded run unless `PROPTEST_RNG_SEED` gives one.
const SEED: u64 = 0x0f22_c5a1_d0c5;

/// Bytes that length-encoded integers, packet headers and status words branch on.
const INTERESTING_BYTES: [u8; 14] =
    [0x00, 0x01, 0x02, 0x03, 0x0a, 0x1f, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];

/// Frame lengths at the edges: empty, shorter than any field, one byte, and the largest ones.
const INTERESTING_LENGTHS: [u32; 9] = [0, 1, 2, 4, 5, 9, 0xfb, 0xff_fffe, 0xff_ffff];

/// One change to a byte string.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flips one bit.
    FlipBit(Index, u8),
    /// Replaces a byte with one parsers branch on.
    SetByte(Index, u8),
    /// Inserts bytes.
    Insert(Index, Vec<u8>),
    /// Removes up to this many bytes.
    Remove(Index, usize),
    /// Repeats up to this many bytes where they are.
    Repeat(Index, usize),
    /// Cuts the rest off.
    Truncate(Index),
    /// Gives the frame whose header is found by walking the frames a new payload length.
    FrameLength(Index, u32),
}

impl Mutation {
    /// Applies the mutation to `bytes`.
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let at = |index: &Index, len: usize| if len == 0 { 0 } else { index.index(len) };
        match self {
            Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
                let at = at(i, bytes.len());
                bytes[at] ^= 1 << (bit % 8);
            }
            Mutation::SetByte(i, byte) if !bytes.is_empty() => {
                let at = at(i, bytes.len());
                bytes[at] = *byte;
            }
            Mutation::Insert(i, inserted) => {
                let at = at(i, bytes.len() + 1);
                bytes.splice(at..at, inserted.iter().copied());
            }
            Mutation::Remove(i, n) if !bytes.is_empty() => {
                let at = at(i, bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Repeat(i, n) if !bytes.is_empty() => {
                let at = at(i, bytes.len());
                let piece = bytes[at..(at + n).min(bytes.len())].to_vec();
                bytes.splice(at..at, piece);
            }
            Mutation::Truncate(i) => {
                let at = at(i, bytes.len() + 1);
                bytes.truncate(at);
            }
            Mutation::FrameLength(i, len) => {
                let headers = frame_headers(bytes);
                if !headers.is_empty() {
                    let header = headers[i.index(headers.len())];
                    bytes[header..header + 3].copy_from_slice(&len.to_le_bytes()[..3]);
                }
            }
            _ => {}
        }
    }
}

/// Where the frame headers are when `bytes` is walked as frames from its start.
fn frame_headers(bytes: &[u8]) -> Vec<usize> {
    let mut headers = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        headers.push(at);
        at += 4 + u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], 0]) as usize;
    }
    headers
}

/// Any one mutation, inserting pieces of `dictionary` (or arbitrary bytes).
pub fn mutation(dictionary: Vec<Vec<u8>>) -> impl Strategy<Value = Mutation> {
    let inserted = prop_oneof![
        3 => select(dictionary),
        1 => prop::collection::vec(any::<u8>(), 1..16),
        1 => select(INTERESTING_BYTES.to_vec()).prop_map(|b| vec![b]),
    ];
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        3 => (any::<Index>(), select(INTERESTING_BYTES.to_vec())).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        3 => (any::<Index>(), inserted).prop_map(|(i, bytes)| Mutation::Insert(i, bytes)),
        2 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Repeat(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), select(INTERESTING_LENGTHS.to_vec())).prop_map(|(i, n)| Mutation::FrameLength(i, n)),
    ]
}

/// Inputs for a fuzz target: a seed with a few mutations, two or three seeds run together and mutated, or
/// arbitrary bytes.
pub fn inputs(seeds: Vec<Vec<u8>>, dictionary: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "a fuzz target needs seeds");
    let mutations = || prop::collection::vec(mutation(dictionary.clone()), 0..6);
    let joined = prop::collection::vec(select(seeds.clone()), 2..4).prop_map(|parts| parts.concat());
    prop_oneof![
        6 => (select(seeds), mutations()).prop_map(|(seed, m)| mutated(seed, &m)),
        2 => (joined, mutations()).prop_map(|(seed, m)| mutated(seed, &m)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn mutated(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        mutation.apply(&mut bytes);
    }
    bytes
}

/// Runs `test` on `cases` inputs of `strategy` (unless `PROPTEST_CASES` says otherwise), from a fixed seed
/// (unless `PROPTEST_RNG_SEED` gives one); a panic in `test` fails the run with the smallest input found that
/// panics, and so does a property it returns as broken.
pub fn run<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let from_env = Config::default();
    let config = Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { from_env.cases } else { cases },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            from_env.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..from_env
    };
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => panic!("{reason}\nminimal failing input: {input:?}"),
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
}

/// Ways to nest a statement: each wraps the value `1` in `WHERE id = 1` one level deeper.
pub const NESTINGS: [(&str, &str); 9] = [
    ("(", ")"),
    ("- ", ""),
    ("NOT ", ""),
    ("ABS(", ")"),
    ("CASE WHEN 1 THEN ", " END"),
    ("(SELECT ", ")"),
    ("(SELECT * FROM (SELECT ", ") AS d)"),
    ("(SELECT id FROM courseware_studentmodulehistory WHERE id IN ", ")"),
    ("(SELECT id FROM courseware_studentmodulehistory h JOIN (courseware_studentmodule m JOIN t ON ", ") ON 1)"),
];
