//! Fixed-bucket latency histograms for the request path (`synod_request_duration_seconds{op}`,
//! `synod_stage_seconds{stage}`): a sample is two relaxed atomic additions, and a histogram's
//! memory is fixed, whatever the request rate.
//!
//! The Prometheus exporter's own histograms keep every sample, with the time it was taken, until
//! the next upkeep or scrape folds them into buckets (upkeep every 5 s here): 16 bytes and a
//! clock read per sample, in blocks of 64. Under 86,000 linearizable reads a second on one
//! node, that buffer grew the node's resident set by about 4 MiB a second between upkeeps, and
//! recording took 3.6% of the node's CPU samples. These record into their buckets directly;
//! `/metrics` renders them in the same text format, names, labels and bucket bounds as before.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the buckets: 25 µs to 10 s, finest where one write's stages fall
/// on a healthy cluster (a loopback round trip is tens of µs, an fdatasync hundreds). Also the
/// bounds of the exporter's own `_seconds` histograms (the storage's), so that every latency
/// histogram of `/metrics` has the same buckets.
pub const LATENCY_BUCKETS: [f64; 24] = [
    0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.00025, 0.0003, 0.0004, 0.0005, 0.00075,
    0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds, what a sample is compared with.
const BOUNDS_NS: [u64; 24] = [
    25_000,
    50_000,
    75_000,
    100_000,
    150_000,
    200_000,
    250_000,
    300_000,
    400_000,
    500_000,
    750_000,
    1_000_000,
    1_500_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// One latency histogram. Invariant: `buckets[i]` counts the samples of at most `BOUNDS_NS[i]`
/// nanoseconds and more than `BOUNDS_NS[i - 1]`; the last slot counts those above every bound.
pub struct Histogram {
    /// Samples per bucket (not cumulative: rendering sums them up), the last one `+Inf`'s own.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    /// Sum of all samples in seconds, an `f64`'s bits: `_sum`. A float, as Prometheus's own
    /// clients keep it, because it must not wrap: the sum grows by the number of requests in
    /// the stage at once each second, and nanoseconds in a `u64` would wrap within two years
    /// at 256 in flight.
    sum_bits: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_NS.len() + 1],
            sum_bits: AtomicU64::new(0), // 0.0
        }
    }

    /// Counts one sample of `took`.
    pub fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let slot = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[slot].fetch_add(1, Relaxed);
        let seconds = took.as_secs_f64();
        // Cannot fail: the closure always gives a value.
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + seconds).to_bits())
        });
    }

    /// Appends this histogram's series to `out` in the Prometheus text format: cumulative
    /// `_bucket` lines, `_sum` (seconds) and `_count`, each with `label="value"`. Samples
    /// recorded while it renders may show in some lines and not yet in others, as with any
    /// scrape of a live counter.
    fn render(&self, out: &mut String, name: &str, label: &str, value: &str) {
        let mut cumulative = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let _ = match LATENCY_BUCKETS.get(i) {
                Some(le) => writeln!(
                    out,
                    "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {cumulative}"
                ),
                None => writeln!(
                    out,
                    "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {cumulative}"
                ),
            };
        }
        let sum = f64::from_bits(self.sum_bits.load(Relaxed));
        let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {cumulative}");
    }
}

/// A histogram per value of one label: one metric family of `/metrics`.
pub struct Family<'a> {
    /// The metric's name (`synod_stage_seconds`).
    pub name: &'static str,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// The label that tells its histograms apart (`stage`).
    pub label: &'static str,
    /// Each histogram and its label value, in the order they are rendered.
    pub series: Vec<(&'static str, &'a Histogram)>,
}

impl Family<'_> {
    /// Appends the family to `out` in the Prometheus text format: `# HELP`, `# TYPE` and every
    /// series, including those with no sample yet (so that a dashboard sees each from the
    /// start).
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (value, histogram) in &self.series {
            histogram.render(out, self.name, self.label, value);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_grow_and_agree_with_the_seconds() {
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        for (s, ns) in LATENCY_BUCKETS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns, "{s} s");
        }
    }

    /// The rendered lines of `h` as (line start, value).
    fn lines(h: &Histogram) -> Vec<(String, String)> {
        let mut out = String::new();
        h.render(&mut out, "t_seconds", "op", "x");
        out.lines()
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("a value");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn a_sample_counts_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let h = Histogram::new();
        h.record(Duration::from_micros(25)); // on the first bound: that bucket
        h.record(Duration::from_nanos(25_001)); // just above it: the next
        h.record(Duration::from_micros(300)); // on a bound within
        h.record(Duration::from_secs(11)); // above every bound
        let l = lines(&h);
        let get = |k: &str| {
            l.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no line {k}"))
        };
        assert_eq!(get("t_seconds_bucket{op=\"x\",le=\"0.000025\"}"), "1");
        assert_eq!(get("t_seconds_bucket{op=\"x\",le=\"0.00005\"}"), "2");
        assert_eq!(get("t_seconds_bucket{op=\"x\",le=\"0.00025\"}"), "2");
        assert_eq!(get("t_seconds_bucket{op=\"x\",le=\"0.0003\"}"), "3");
        assert_eq!(get("t_seconds_bucket{op=\"x\",le=\"10\"}"), "3");
        assert_eq!(get("t_seconds_bucket{op=\"x\",le=\"+Inf\"}"), "4");
        assert_eq!(get("t_seconds_count{op=\"x\"}"), "4");
        let sum: f64 = get("t_seconds_sum{op=\"x\"}").parse().expect("a number");
        assert!((sum - 11.000350001).abs() < 1e-9, "sum {sum}");
        // One line per bound, +Inf, _sum and _count.
        assert_eq!(l.len(), LATENCY_BUCKETS.len() + 3);
    }

    #[test]
    fn a_family_renders_a_header_and_every_series() {
        let (a, b) = (Histogram::new(), Histogram::new());
        b.record(Duration::from_millis(1));
        let mut out = String::new();
        Family {
            name: "t_seconds",
            help: "a test",
            label: "stage",
            series: vec![("a", &a), ("b", &b)],
        }
        .render(&mut out);
        assert!(out.starts_with("# HELP t_seconds a test\n# TYPE t_seconds histogram\n"));
        assert!(out.contains("t_seconds_count{stage=\"a\"} 0\n"));
        assert!(out.contains("t_seconds_count{stage=\"b\"} 1\n"));
        assert!(out.contains("t_seconds_bucket{stage=\"b\",le=\"0.001\"} 1\n"));
        assert!(out.contains("t_seconds_bucket{stage=\"b\",le=\"0.00075\"} 0\n"));
    }
}
