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
/// shrunk: proptest simplifies its steps (fewer servers, less time), then whole steps are
/// removed for as long as it still fails.
pub fn run(
    options: Options,
    check: impl FnMut(&[Step]) -> Result<(), String>,
) -> Result<(), Failure> {
    // proptest wants a `Fn`; the check may keep state between sequences (a lab, a counter).
    let check = std::cell::RefCell::new(check);
    let config = Config {
        cases: options.sequences,
        max_shrink_iters: options.shrink_iterations / 2,
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
        (check.borrow_mut())(&steps).map_err(TestCaseError::fail)
    });
    match outcome {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, sequence)) => {
            let (sequence, error) = remove_steps(
                sequence,
                reason.message().to_owned(),
                options.shrink_iterations / 2,
                &mut *check.borrow_mut(),
            );
            Err(Failure {
                sequence,
                error,
                seed: options.seed,
            })
        }
        Err(TestError::Abort(reason)) => Err(Failure {
            sequence: Vec::new(),
            error: format!("the run was aborted: {}", reason.message()),
            seed: options.seed,
        }),
    }
}

/// Removes steps from a failing sequence while it still fails: halves, then quarters, down to
/// single steps, trying at most `budget` sequences. (proptest cannot: the sequences it makes
/// have a fixed length, so that every one is as long as asked.)
fn remove_steps(
    mut sequence: Vec<Step>,
    mut error: String,
    mut budget: u32,
    check: &mut dyn FnMut(&[Step]) -> Result<(), String>,
) -> (Vec<Step>, String) {
    let mut chunk = (sequence.len() / 2).max(1);
    loop {
        let mut removed = false;
        let mut start = 0;
        while start < sequence.len() && sequence.len() > 1 && budget > 0 {
            let end = (start + chunk).min(sequence.len());
            let mut shorter = sequence.clone();
            shorter.drain(start..end);
            budget -= 1;
            match (shorter.is_empty(), check(&shorter)) {
                (false, Err(e)) => {
                    sequence = shorter;
                    error = e;
                    removed = true;
                }
                _ => start += chunk,
            }
        }
        if budget == 0 || (chunk == 1 && !removed) {
            return (sequence, error);
        }
        if !removed {
            chunk = (chunk / 2).max(1);
        }
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
