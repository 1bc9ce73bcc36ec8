//! The model of killswitch's model-based tester.
//!
//! The defects that outside testers found all lived in *sequences*: each command worked alone and
//! a combination failed open (`off` then `lockdown on` armed nothing). This crate walks sequences
//! systematically. It holds:
//!
//! - [`step`]: the two alphabets, what the user does (`guard`, `up` with 1–3 servers, `lockdown`,
//!   a restart, a crash, …) and what the world does (a server dies, the tunnel goes away, another
//!   program flushes the ruleset, time passes, …), and random sequences of them;
//! - [`model`]: a small, obviously-correct description of what must hold after each step: which
//!   protection is armed, what `status` says, where DNS points. It knows nothing of how the daemon
//!   works; it is the user's and the documentation's view;
//! - [`judge`]: checks a ruleset (the kernel's, or a simulated kernel's) against the model, by
//!   asking the policy's evaluator what happens to packets a user's machine sends. It judges
//!   behaviour, not rules, so that a rule dropped from the compiler is caught;
//! - [`runner`]: runs random sequences from a seed and shrinks a failing one to a minimal one.
//!
//! Two levels drive the same sequences: the daemon's deterministic core with fake backends
//! (thousands of sequences per second, no root), and the real daemon in lab namespaces with a real
//! tunnel and a capture (`killswitch-lab model`).

#![forbid(unsafe_code)]

pub mod judge;
pub mod model;
pub mod runner;
pub mod step;

pub use judge::Topology;
pub use model::{Expectation, Model, Protection};
pub use step::{Step, UserStep, WorldStep};
