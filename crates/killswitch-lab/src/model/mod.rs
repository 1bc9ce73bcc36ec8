//! Level 2 of the model-based tester: the sequences of [`killswitch_model`] against the real
//! `killswitchd`, in the lab's namespaces, with a real tunnel and a capture as the judge.
//!
//! Level 1 (the daemon's core with fake backends, `killswitch_daemon::sim`) and level 2 walk the
//! same sequences: both use [`killswitch_model::runner::run`], so a seed names the same sequences
//! at both levels, and a failure at either is shrunk the same way. Level 2 is thousands of times
//! slower, so it runs tens of sequences, not thousands, and its shrinking is bounded in iterations
//! and in time.
//!
//! - [`world`]: the lab, built once per run and reset before every sequence, and the world's
//!   steps (a tunnel dying, a server going silent, the link flapping, ...) carried out for real;
//! - [`sequence`]: one sequence, each step carried out (CLI commands, signals, a second daemon,
//!   teardown, a malformed request) and checked against the model;
//! - [`leaks`]: traffic offered after each step and the capture judged against the model's floor.
//!
//! What this module does not own: the model itself (what must hold), which lives in
//! `killswitch-model` and knows nothing of the lab.

pub mod leaks;
pub mod sequence;
pub mod world;

use killswitch_model::runner::{self, Failure, Options};
use serde::Serialize;
use std::time::{Duration, Instant};

/// How a level-2 run is made.
#[derive(Debug, Clone, Copy)]
pub struct LabOptions {
    /// Sequences, steps, seed and shrink iterations, as for level 1.
    pub run: Options,
    /// How many `up` servers the lab runs (1 to 3); the model's `up n` and server steps are
    /// clamped to them.
    pub servers: usize,
    /// How long shrinking may take in all, after the first failure; replays after that are
    /// skipped, and the smallest failing sequence found so far is reported.
    pub shrink_budget: Duration,
    /// Print a line per sequence to stderr.
    pub progress: bool,
}

/// A failing sequence, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FailureReport {
    /// The seed that finds it again.
    pub seed: u64,
    /// The steps, shrunk, one per entry.
    pub sequence: Vec<String>,
    /// What broke, after which step.
    pub error: String,
}

impl From<&Failure> for FailureReport {
    fn from(f: &Failure) -> Self {
        FailureReport {
            seed: f.seed,
            sequence: f.sequence.iter().map(ToString::to_string).collect(),
            error: f.error.clone(),
        }
    }
}

/// Time spent on one kind of step.
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    /// The kind (`User:Up`, `World:ServerDown`, ...).
    pub step: String,
    /// How many were carried out and checked.
    pub count: u32,
    /// In all, checks included, in milliseconds.
    pub total_ms: u64,
}

/// The run's report (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `sim` (level 1, the core with fake backends) or `lab` (level 2, the real daemon).
    pub level: &'static str,
    /// Sequences asked for.
    pub sequences: u32,
    /// How many steps each has.
    pub steps: usize,
    /// The seed.
    pub seed: u64,
    /// The `up` servers the lab ran (level 2).
    pub servers: Option<usize>,
    /// The shrink iterations allowed.
    pub shrink_iterations: u32,
    /// Sequences carried out up to the first failure (level 2).
    pub sequences_run: Option<u32>,
    /// Replays while shrinking a failure (level 2).
    pub shrink_replays: Option<u32>,
    /// Steps in those sequences (level 2).
    pub steps_run: Option<u64>,
    /// Wall time of the whole run, in milliseconds.
    pub duration_ms: u64,
    /// Whether every sequence held.
    pub passed: bool,
    /// The failing sequence, shrunk.
    pub failure: Option<FailureReport>,
    /// Why the lab itself failed, if it did (the run stopped there).
    pub lab_error: Option<String>,
    /// Time per kind of step (level 2).
    pub step_timings: Vec<StepTiming>,
}

impl Report {
    fn new(level: &'static str, options: &Options) -> Self {
        Report {
            level,
            sequences: options.sequences,
            steps: options.steps,
            seed: options.seed,
            servers: None,
            shrink_iterations: options.shrink_iterations,
            sequences_run: None,
            shrink_replays: None,
            steps_run: None,
            duration_ms: 0,
            passed: false,
            failure: None,
            lab_error: None,
            step_timings: Vec::new(),
        }
    }

    /// The report for a person: the verdict, the failure with its replay command, and timings.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut text = String::new();
        let level = if self.level == "sim" {
            "level 1, the daemon's core with fake backends"
        } else {
            "level 2, the real daemon in lab namespaces"
        };
        let _ = writeln!(
            text,
            "killswitch-lab model ({level}): {} sequences of {} steps, seed {}",
            self.sequences, self.steps, self.seed
        );
        if let (Some(runs), Some(steps)) = (self.sequences_run, self.steps_run) {
            let replays = match self.shrink_replays {
                Some(n) if n > 0 => format!(", then {n} replays while shrinking"),
                _ => String::new(),
            };
            let _ = writeln!(
                text,
                "carried out {runs} sequences ({steps} steps){replays} in {:.1} s",
                self.duration_ms as f64 / 1000.0
            );
        } else {
            let _ = writeln!(text, "took {:.1} s", self.duration_ms as f64 / 1000.0);
        }
        if !self.step_timings.is_empty() {
            let _ = writeln!(text, "time per kind of step (checks included):");
            for t in &self.step_timings {
                let _ = writeln!(
                    text,
                    "  {:<28} {:>4} x {:>6} ms = {:>7.1} s",
                    t.step,
                    t.count,
                    t.total_ms / u64::from(t.count.max(1)),
                    t.total_ms as f64 / 1000.0
                );
            }
        }
        if let Some(f) = &self.failure {
            let _ = writeln!(
                text,
                "FAILED: an invariant broke (seed {}; shrunk to {} steps):",
                f.seed,
                f.sequence.len()
            );
            for (n, step) in f.sequence.iter().enumerate() {
                let _ = writeln!(text, "  {:>2}. {step}", n + 1);
            }
            let _ = writeln!(text, "{}", f.error);
            let _ = writeln!(
                text,
                "replay: killswitch-lab model --sequences {} --steps {} --seed {}{}",
                self.sequences,
                self.steps,
                self.seed,
                match self.servers {
                    _ if self.level == "sim" => " --sim".to_owned(),
                    Some(servers) => format!(" --servers {servers}"),
                    None => String::new(),
                }
            );
        }
        if let Some(e) = &self.lab_error {
            let _ = writeln!(text, "ERROR: the lab failed, the run stopped: {e}");
        }
        if self.passed {
            let _ = writeln!(text, "passed");
        }
        text
    }
}

/// Level 1: the daemon's core with fake backends (`killswitch_daemon::sim`).
pub fn run_sim(options: Options) -> Report {
    let start = Instant::now();
    let outcome = killswitch_daemon::sim::run(options);
    let mut report = Report::new("sim", &options);
    report.duration_ms = start.elapsed().as_millis() as u64;
    report.passed = outcome.is_ok();
    report.failure = outcome.err().as_ref().map(FailureReport::from);
    report
}

/// Level 2: the sequences against the real daemon. Needs root.
pub fn run_lab(options: LabOptions) -> Report {
    let start = Instant::now();
    let mut report = Report::new("lab", &options.run);
    report.servers = Some(options.servers);
    let mut world = match world::World::build(options.servers) {
        Ok(world) => world,
        Err(e) => {
            report.lab_error = Some(format!("building the lab: {e:#}"));
            report.duration_ms = start.elapsed().as_millis() as u64;
            return report;
        }
    };
    report.servers = Some(world.servers());
    let mut lab_error = None;
    let mut first_failure: Option<Instant> = None;
    let (mut runs, mut replays, mut steps_run) = (0u32, 0u32, 0u64);
    let mut timings = sequence::Timings::new();
    let outcome = runner::run(options.run, |steps| {
        // After the lab broke, or once shrinking has had its time, every replay "passes": the
        // runner then stops and reports the smallest failure it has.
        if lab_error.is_some()
            || first_failure.is_some_and(|at| at.elapsed() > options.shrink_budget)
        {
            return Ok(());
        }
        if first_failure.is_some() {
            replays += 1;
        } else {
            runs += 1;
            steps_run += steps.len() as u64;
        }
        let began = Instant::now();
        let result = sequence::run(&mut world, steps, &mut timings);
        if options.progress {
            let what = if first_failure.is_some() {
                "shrinking: replay"
            } else {
                "sequence"
            };
            let verdict = match &result {
                Ok(()) => "ok".to_owned(),
                Err(sequence::StepError::Broke(_)) => "FAILED".to_owned(),
                Err(sequence::StepError::Lab(e)) => format!("lab error: {e:#}"),
            };
            let number = if first_failure.is_some() {
                replays
            } else {
                runs
            };
            eprintln!(
                "{what} {number} ({} steps): {verdict} in {:.1} s",
                steps.len(),
                began.elapsed().as_secs_f64()
            );
        }
        match result {
            Ok(()) => Ok(()),
            Err(sequence::StepError::Broke(what)) => {
                first_failure.get_or_insert_with(Instant::now);
                Err(what)
            }
            Err(sequence::StepError::Lab(e)) => {
                lab_error = Some(format!("{e:#}"));
                Ok(())
            }
        }
    });
    drop(world);
    report.sequences_run = Some(runs);
    report.shrink_replays = Some(replays);
    report.steps_run = Some(steps_run);
    report.step_timings = timings
        .into_iter()
        .map(|(step, (count, total))| StepTiming {
            step,
            count,
            total_ms: total.as_millis() as u64,
        })
        .collect();
    report.failure = outcome.err().as_ref().map(FailureReport::from);
    report.lab_error = lab_error;
    report.passed = report.failure.is_none() && report.lab_error.is_none();
    report.duration_ms = start.elapsed().as_millis() as u64;
    report
}
