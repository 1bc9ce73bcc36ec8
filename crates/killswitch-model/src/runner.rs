//! Runs random sequences from a seed, and shrinks a failing one to a minimal one.
//!
//! The same seed gives the same sequences, so a failure is replayed with `--seed`. Shrinking is
//! proptest's: drop steps, simplify the ones left, keep what still fails.

use crate::step::{Step, describe, sequence};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// How many sequences, how long, from which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How many sequences to run.
    pub sequences: u32,
    /// How many steps each has.
    pub steps: usize,
    /// The seed of the whole run.
    pub seed: u64,
    /// How many shrinking steps to try (each runs the failing sequence again).
    pub shrink_iterations: u32,
}

/// A sequence that broke an invariant, as small as shrinking made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The steps.
    pub sequence: Vec<Step>,
    /// What broke, after which step.
    pub error: String,
    /// The seed that finds it again.
    pub seed: u64,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an invariant broke (seed {}; shrunk to {} steps):\n{}{}",
            self.seed,
            self.sequence.len(),
            describe(&self.sequence),
            self.error
        )
    }
}

/// Runs `options.sequences` random sequences of exactly `options.steps` steps through `check`,
/// which carries one out from a fresh start and says what broke. Returns the first failure,
/// shrunk (see [`shrink`]), with at most `options.shrink_iterations` replays.
pub fn run(
    options: Options,
    check: impl FnMut(&[Step]) -> Result<(), String>,
) -> Result<(), Failure> {
    // proptest wants a `Fn`; the check may keep state between sequences (a lab, a counter).
    let check = std::cell::RefCell::new(check);
    // The first failure, kept here: proptest's own shrinking is not used (its sequences have a
    // fixed length, and it says things on stderr about limits the user did not set), so once a
    // sequence has failed every other one "passes" and proptest stops at once.
    let found: std::cell::RefCell<Option<(Vec<Step>, String)>> = std::cell::RefCell::new(None);
    let config = Config {
        cases: options.sequences,
        max_shrink_iters: u32::MAX,
        failure_persistence: None,
        // The sequences are the test; nothing is rejected.
        max_global_rejects: 0,
        ..Config::default()
    };
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&options.seed.to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let outcome = runner.run(&sequence(options.steps), |steps| {
        if found.borrow().is_some() {
            return Ok(());
        }
        (check.borrow_mut())(&steps).map_err(|error| {
            *found.borrow_mut() = Some((steps.clone(), error.clone()));
            TestCaseError::fail(error)
        })
    });
    if let Err(TestError::Abort(reason)) = outcome {
        return Err(Failure {
            sequence: Vec::new(),
            error: format!("the run was aborted: {}", reason.message()),
            seed: options.seed,
        });
    }
    match found.into_inner() {
        None => Ok(()),
        Some((sequence, error)) => {
            let (sequence, error) = shrink(
                sequence,
                error,
                options.shrink_iterations,
                &mut *check.borrow_mut(),
            );
            Err(Failure {
                sequence,
                error,
                seed: options.seed,
            })
        }
    }
}

/// Makes a failing sequence as small as `budget` replays allow, keeping only changes after which
/// it still fails: the shortest prefix that fails (found by bisection: a sequence that fails
/// after step k fails with any longer prefix too), then steps removed (halves, quarters, down to
/// single steps), then each step made simpler (`up` with fewer servers, less time passing).
pub fn shrink(
    mut sequence: Vec<Step>,
    mut error: String,
    mut budget: u32,
    check: &mut dyn FnMut(&[Step]) -> Result<(), String>,
) -> (Vec<Step>, String) {
    let mut attempt = |candidate: &[Step], budget: &mut u32| -> Option<String> {
        if *budget == 0 || candidate.is_empty() {
            return None;
        }
        *budget -= 1;
        check(candidate).err()
    };
    // The shortest failing prefix.
    let (mut low, mut high) = (1, sequence.len());
    while low < high {
        let middle = (low + high) / 2;
        match attempt(&sequence[..middle], &mut budget) {
            Some(e) => {
                high = middle;
                error = e;
            }
            None if budget == 0 => break,
            None => low = middle + 1,
        }
    }
    sequence.truncate(high);
    // Steps removed.
    let mut chunk = (sequence.len() / 2).max(1);
    while budget > 0 {
        let mut removed = false;
        let mut start = 0;
        while start < sequence.len() && sequence.len() > 1 && budget > 0 {
            let end = (start + chunk).min(sequence.len());
            let mut shorter = sequence.clone();
            shorter.drain(start..end);
            match attempt(&shorter, &mut budget) {
                Some(e) => {
                    sequence = shorter;
                    error = e;
                    removed = true;
                }
                None => start += chunk,
            }
        }
        if chunk == 1 && !removed {
            break;
        }
        if !removed {
            chunk = (chunk / 2).max(1);
        }
    }
    // Each step simpler.
    for index in 0..sequence.len() {
        for simpler in simpler(&sequence[index]) {
            let mut candidate = sequence.clone();
            candidate[index] = simpler;
            if let Some(e) = attempt(&candidate, &mut budget) {
                sequence = candidate;
                error = e;
                break;
            }
        }
    }
    (sequence, error)
}

/// Simpler versions of a step, simplest first.
fn simpler(step: &Step) -> Vec<Step> {
    use crate::step::{UserStep, WorldStep};
    match step {
        Step::User(UserStep::Up { servers }) => (1..*servers)
            .map(|servers| Step::User(UserStep::Up { servers }))
            .collect(),
        Step::World(WorldStep::TimePasses(seconds)) if *seconds > 1 => {
            vec![Step::World(WorldStep::TimePasses(1))]
        }
        Step::User(UserStep::Crash) => vec![Step::User(UserStep::Restart)],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::UserStep;

    #[test]
    fn a_failing_sequence_is_shrunk_to_what_fails() {
        let options = Options {
            sequences: 500,
            steps: 20,
            seed: 7,
            shrink_iterations: 2000,
        };
        let failure = run(options, |steps| {
            if steps.contains(&Step::User(UserStep::Off)) {
                Err("off".to_owned())
            } else {
                Ok(())
            }
        })
        .expect_err("off is common enough to be found");
        assert_eq!(failure.sequence, vec![Step::User(UserStep::Off)]);
        let again = run(options, |steps| {
            if steps.contains(&Step::User(UserStep::Off)) {
                Err("off".to_owned())
            } else {
                Ok(())
            }
        })
        .expect_err("the same seed");
        assert_eq!(again, failure);
    }
}
