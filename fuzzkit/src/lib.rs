//! Fuzzing as ordinary `#[test]`s, for a toolchain without `cargo fuzz`
//! (which needs nightly): a seeded generator, byte mutations, and a loop
//! that runs a target for a time budget. There is no coverage feedback, so
//! the corpus grows by outcome instead: an input whose result the target
//! describes differently from every earlier one (another error, another
//! shape of success) is kept and mutated further. That steers the search
//! past the first parse errors without instrumentation.
//!
//! `GANTRY_FUZZ_SECS` sets each target's budget (default 2 s, for CI);
//! `GANTRY_FUZZ_SEED` replays a run. A panicking input is written to
//! the temp directory and named in the failure, to become a regression
//! test.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// splitmix64: small, fast, and good enough to drive mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Values that break parsers: boundaries of integer widths, and bytes
/// that mean something in text formats.
const INTERESTING: &[&[u8]] = &[
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"/",
    b"..",
    b"../",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"@",
    b"%",
    b"\\u0000",
    b"99999999999999999999",
    b"-1",
];

/// One to four random edits of `input`: flip, overwrite, insert or remove
/// bytes, insert an interesting value, or splice in part of another corpus
/// entry. The result stays under `max_len`.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next_u64() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let b = rng.bytes(n);
                input.splice(at..at, b);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                input.drain(at..at + n);
            }
            4 => {
                let v = rng.pick(INTERESTING);
                let at = rng.below(len + 1);
                if rng.one_in(2) && at + v.len() <= len {
                    input[at..at + v.len()].copy_from_slice(v);
                } else {
                    input.splice(at..at, v.iter().copied());
                }
            }
            5 if !corpus.is_empty() => {
                let other = rng.pick(corpus);
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(256));
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            _ if len > 1 => {
                // Duplicate a chunk: repeated structures (entries, frames).
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(512));
                let chunk = input[from..from + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            _ => input.push(rng.next_u64() as u8),
        }
    }
    input.truncate(max_len);
}

/// What a run did, for the report.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub seed: u64,
    pub iterations: u64,
    pub elapsed: Duration,
    /// Inputs kept: the seeds and every input with a new outcome.
    pub corpus: usize,
    pub outcomes: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: {} inputs in {:.1} s, corpus {}, {} distinct outcomes (seed {})",
            self.name,
            self.iterations,
            self.elapsed.as_secs_f64(),
            self.corpus,
            self.outcomes,
            self.seed
        )
    }
}

/// The time budget of one target.
pub fn budget() -> Duration {
    let secs = std::env::var("GANTRY_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("GANTRY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// Runs `target` on mutations of `seeds` for the budget. `target` returns
/// a short description of the outcome (say, the error's kind); it must not
/// panic, and a panic fails the test with the input saved.
pub fn bytes(
    name: &str,
    seeds: Vec<Vec<u8>>,
    max_len: usize,
    mut target: impl FnMut(&[u8]) -> String,
) -> Report {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut corpus = if seeds.is_empty() {
        vec![Vec::new()]
    } else {
        seeds
    };
    let mut seen = HashSet::new();
    for s in &corpus {
        seen.insert(guarded(name, seed, s, &mut target));
    }
    let start = Instant::now();
    let budget = budget();
    let mut iterations = corpus.len() as u64;
    while start.elapsed() < budget {
        let mut input = rng.pick(&corpus).clone();
        mutate(&mut rng, &mut input, &corpus, max_len);
        iterations += 1;
        if seen.insert(guarded(name, seed, &input, &mut target)) {
            corpus.push(input);
        }
    }
    let report = Report {
        name: name.to_string(),
        seed,
        iterations,
        elapsed: start.elapsed(),
        corpus: corpus.len(),
        outcomes: seen.len(),
    };
    println!("{report}");
    report
}

/// Runs `target` on inputs it builds itself from the generator (for
/// structured inputs) for the budget; the outcome descriptions are counted
/// as in [`bytes`].
pub fn structured(name: &str, mut target: impl FnMut(&mut Rng) -> String) -> Report {
    let seed = seed();
    let start = Instant::now();
    let budget = budget();
    let mut seen = HashSet::new();
    let mut iterations = 0u64;
    while start.elapsed() < budget {
        // Each input's own seed, so a failure can be replayed alone.
        let input_seed = Rng::new(seed ^ iterations).next_u64();
        let mut rng = Rng::new(input_seed);
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&mut rng)));
        match outcome {
            Ok(o) => {
                seen.insert(o);
            }
            Err(_) => panic!("fuzz {name}: the target panicked on the input of seed {input_seed} (run seed {seed})"),
        }
        iterations += 1;
    }
    let report = Report {
        name: name.to_string(),
        seed,
        iterations,
        elapsed: start.elapsed(),
        corpus: 0,
        outcomes: seen.len(),
    };
    println!("{report}");
    report
}

fn guarded(
    name: &str,
    seed: u64,
    input: &[u8],
    target: &mut impl FnMut(&[u8]) -> String,
) -> String {
    match catch_unwind(AssertUnwindSafe(|| target(input))) {
        Ok(o) => o,
        Err(_) => {
            let path = std::env::temp_dir().join(format!("gantry-fuzz-{name}-{seed}.bin"));
            let saved = std::fs::write(&path, input).is_ok();
            panic!(
                "fuzz {name}: the target panicked on a {} byte input{} (seed {seed})",
                input.len(),
                if saved {
                    format!(", saved to {}", path.display())
                } else {
                    String::new()
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        assert!((0..1000).all(|_| a.below(10) < 10));
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn mutations_stay_under_the_cap_and_change_things() {
        let mut rng = Rng::new(1);
        let corpus = vec![b"hello world".to_vec()];
        let mut changed = 0;
        for _ in 0..1000 {
            let mut x = corpus[0].clone();
            mutate(&mut rng, &mut x, &corpus, 32);
            assert!(x.len() <= 32);
            changed += usize::from(x != corpus[0]);
        }
        assert!(changed > 900, "{changed}");
    }

    #[test]
    fn new_outcomes_grow_the_corpus_and_panics_fail() {
        std::env::set_var("GANTRY_FUZZ_SECS", "0.2");
        let r = bytes("demo", vec![b"a".to_vec()], 8, |b| format!("{}", b.len()));
        assert!(r.corpus > 1 && r.corpus <= 9, "{r}");
        assert_eq!(r.corpus, r.outcomes);
        let p = catch_unwind(|| {
            bytes("demo-panic", vec![b"ab".to_vec()], 8, |b| {
                assert!(b.len() < 4, "too long");
                String::new()
            })
        });
        assert!(p.is_err());
    }
}
