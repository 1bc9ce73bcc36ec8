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
    /// The most steps in one.
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

/// Runs `options.sequences` random sequences through `check`, which carries one out from a fresh
/// start and says what broke. Returns the first failure, shrunk.
pub fn run(
    options: Options,
    check: impl FnMut(&[Step]) -> Result<(), String>,
) -> Result<(), Failure> {
    // proptest wants a `Fn`; the check may keep state between sequences (a lab, a counter).
    let check = std::cell::RefCell::new(check);
    let config = Config {
        cases: options.sequences,
        max_shrink_iters: options.shrink_iterations,
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
        Err(TestError::Fail(reason, sequence)) => Err(Failure {
            sequence,
            error: reason.message().to_owned(),
            seed: options.seed,
        }),
        Err(TestError::Abort(reason)) => Err(Failure {
            sequence: Vec::new(),
            error: format!("the run was aborted: {}", reason.message()),
            seed: options.seed,
        }),
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
