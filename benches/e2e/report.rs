//! The benchmark's figures: per-phase measurements and the Markdown tables.

use std::fmt::Write;
use std::time::Duration;

use crate::process::Usage;
use crate::tap::TapRun;

/// One phase of one pollbus run.
pub struct Phase {
    /// `baseline`, `idle`, `10% changed`.
    pub name: &'static str,
    /// Records the phase was about.
    pub records: usize,
    /// Changes delivered.
    pub changes: usize,
    /// Baseline: spawn → first poll done; idle: until the second poll is done; changed: first
    /// Table API request after the updates → last message delivered.
    pub wall: Duration,
    /// pollbus CPU seconds spent in the phase.
    pub cpu_s: f64,
    /// pollbus peak RSS during the phase (bytes).
    pub peak_rss: u64,
    /// Table API requests.
    pub requests: usize,
    /// Table API response bytes.
    pub bytes: usize,
    /// Time the simulator spent answering those requests (in this process, on the same cores).
    pub sim_busy: Duration,
    /// Seconds from each record's update in the simulator to its message's arrival.
    pub latencies: Vec<f64>,
}

/// One pollbus process against one N and one sink.
pub struct Run {
    /// Records in the table.
    pub n: usize,
    /// `emulator` or `jsonl`.
    pub sink: String,
    /// baseline, idle, changed.
    pub phases: Vec<Phase>,
    /// The whole process's CPU and peak RSS (`wait4`).
    pub total: Usage,
    /// The SQLite state file(s) at exit.
    pub state_bytes: u64,
    /// Of which the SQLite write-ahead log (transient: checkpointed into the file, not removed
    /// when pollbus stops); 0 with PostgreSQL.
    pub wal_bytes: u64,
}

impl Run {
    fn phase(&self, name: &str) -> &Phase {
        self.phases
            .iter()
            .find(|p| p.name == name)
            .expect("every run has its three phases")
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

fn rate(count: usize, wall: Duration) -> f64 {
    count as f64 / wall.as_secs_f64().max(1e-9)
}

fn per_100k(cpu: f64, count: usize) -> f64 {
    cpu / count.max(1) as f64 * 100_000.0
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Prints one run's phases as they finish.
pub fn print_run(run: &Run) {
    for p in &run.phases {
        eprintln!(
            "   {:<12} {:>8} rec {:>8} chg  {:>7.2} s  {:>8.0}/s  cpu {:>6.2} s  peak {:>9}  {:>4} req  {:>11} B  sim {:>6.2} s{}",
            p.name,
            p.records,
            p.changes,
            p.wall.as_secs_f64(),
            rate(p.records, p.wall),
            p.cpu_s,
            mb(p.peak_rss),
            p.requests,
            p.bytes,
            p.sim_busy.as_secs_f64(),
            if p.latencies.is_empty() {
                String::new()
            } else {
                format!(
                    "  latency p50 {:.3} s p99 {:.3} s",
                    quantile(&p.latencies, 0.5),
                    quantile(&p.latencies, 0.99)
                )
            }
        );
    }
    eprintln!(
        "   whole process: cpu {:.2} s, peak RSS {}, state {} (write-ahead log {}; {} bytes per record without it)",
        run.total.cpu_s,
        mb(run.total.peak_rss),
        mb(run.state_bytes),
        mb(run.wal_bytes),
        (run.state_bytes - run.wal_bytes) / (run.n.max(1) as u64)
    );
}

/// Prints the tap's figures.
pub fn print_tap(t: &TapRun) {
    eprintln!(
        "   tap: {} of {} records in {:.2} s ({:.0}/s), cpu {:.2} s, peak {}, {} req, {} B",
        t.records,
        t.n,
        t.wall.as_secs_f64(),
        rate(t.records, t.wall),
        t.usage.cpu_s,
        mb(t.usage.peak_rss),
        t.requests,
        t.bytes
    );
}

/// The results as Markdown tables.
pub fn markdown(settings: &str, runs: &[Run], taps: &[TapRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Settings: {settings}.\n");
    let _ = writeln!(
        s,
        "| N | sink | baseline records/s | CPU s per 100k records | idle poll requests | changes/s | CPU s per 100k changes | requests per 1,000 changes | response bytes per change | latency p50 / p99 | peak RSS baseline / changed / whole run | state file |"
    );
    let _ = writeln!(
        s,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let (b, i, c) = (r.phase("baseline"), r.phase("idle"), r.phase("10% changed"));
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.2} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} s / {:.2} s | {} / {} / {} | {} |",
            r.n,
            r.sink,
            rate(b.records, b.wall),
            per_100k(b.cpu_s, b.records),
            i.requests,
            rate(c.changes, c.wall),
            per_100k(c.cpu_s, c.changes),
            c.requests as f64 * 1000.0 / c.changes.max(1) as f64,
            c.bytes as f64 / c.changes.max(1) as f64,
            quantile(&c.latencies, 0.5),
            quantile(&c.latencies, 0.99),
            mb(b.peak_rss),
            mb(c.peak_rss),
            mb(r.total.peak_rss),
            mb(r.state_bytes),
        );
    }
    if !taps.is_empty() {
        let _ = writeln!(
            s,
            "\nFull extraction (pollbus: its baseline poll, which also stores every snapshot; the tap: one run writing Singer messages to a file), same fields, same page size. Tap: {}.\n",
            taps[0].version
        );
        let _ = writeln!(
            s,
            "| N | tap records/s | tap CPU s per 100k | tap peak RSS | tap requests | pollbus records/s | pollbus CPU s per 100k | pollbus peak RSS | pollbus requests | tap CPU / pollbus CPU |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for t in taps {
            let Some(p) = runs
                .iter()
                .filter(|r| r.n == t.n)
                .map(|r| r.phase("baseline"))
                .min_by(|a, b| a.cpu_s.total_cmp(&b.cpu_s))
            else {
                continue;
            };
            let tap_cpu = per_100k(t.usage.cpu_s, t.records);
            let pb_cpu = per_100k(p.cpu_s, p.records);
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} | {} | {} | {:.0} | {:.2} | {} | {} | {:.1}× |",
                t.n,
                rate(t.records, t.wall),
                tap_cpu,
                mb(t.usage.peak_rss),
                t.requests,
                rate(p.records, p.wall),
                pb_cpu,
                mb(p.peak_rss),
                p.requests,
                tap_cpu / pb_cpu.max(1e-9),
            );
        }
    }
    s
}
