//! Percentiles and ratios over samples measured in the same run.

use std::time::Duration;

/// A set of timing samples.
#[derive(Debug, Clone)]
pub(crate) struct Samples(Vec<Duration>);

impl Samples {
    /// Wraps `samples` (unsorted).
    pub(crate) fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Samples(samples)
    }

    /// The `p`th percentile (0..=100), nearest rank.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    /// The median.
    pub(crate) fn median(&self) -> Duration {
        self.percentile(50.0)
    }

    /// How many samples.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A duration in the unit that reads best.
pub(crate) fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `a / b` as "12.3×".
pub(crate) fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "-".to_owned();
    }
    format!("{:.1}×", a.as_secs_f64() / b.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples::new((1..=100).map(Duration::from_micros).collect());
        assert_eq!(s.median(), Duration::from_micros(50));
        assert_eq!(s.percentile(99.0), Duration::from_micros(99));
        assert_eq!(s.percentile(100.0), Duration::from_micros(100));
        assert_eq!(Samples::new(vec![]).median(), Duration::ZERO);
    }

    #[test]
    fn human_picks_the_unit() {
        assert_eq!(human(Duration::from_micros(574)), "574 µs");
        assert_eq!(human(Duration::from_micros(1_600)), "1.60 ms");
        assert_eq!(human(Duration::from_millis(2_998)), "3.00 s");
    }
}
