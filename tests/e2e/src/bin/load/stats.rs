//! Percentiles of measured durations, and how they are printed.

use std::time::Duration;

/// Percentiles, maximum and mean of a set of durations.
#[derive(Debug)]
pub struct Stats {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

/// Nearest-rank percentiles of `values`.
///
/// # Panics
/// When `values` is empty.
pub fn stats(mut values: Vec<Duration>) -> Stats {
    values.sort();
    let rank = |p: f64| {
        let index = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
        values[index]
    };
    let total: Duration = values.iter().sum();
    Stats {
        p50: rank(0.50),
        p95: rank(0.95),
        p99: rank(0.99),
        max: *values.last().expect("at least one sample"),
        mean: total / values.len() as u32,
    }
}

/// `d` in milliseconds with one decimal: `12.3 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
