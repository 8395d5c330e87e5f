//! Measuring a child process from the outside: CPU time and resident memory from `/proc`, the
//! final totals from `wait4`, and the peak-RSS reset (`clear_refs`) that gives each phase its own
//! peak.

use std::process::Child;
use std::time::{Duration, Instant};

/// CPU seconds (user + system) and peak resident set so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set size in bytes (`VmHWM`, or `ru_maxrss` after exit).
    pub peak_rss: u64,
}

/// Reads the live usage of `pid` from `/proc`.
pub fn sample(pid: u32) -> std::io::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| std::io::Error::other("unreadable /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Usage {
        cpu_s: ticks / clock_ticks(),
        peak_rss: peak_kb * 1024,
    })
}

/// Resets the peak RSS of `pid` to its current RSS (Linux ≥ 4.0), so the next phase reports
/// its own peak.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// A finished child's totals from `wait4`.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// The exit status (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// Its CPU time and peak RSS over its whole life.
    pub usage: Usage,
}

/// Waits for `child` and returns its CPU time (`wait4`) and peak RSS (the highest `VmHWM` seen
/// while it ran, sampled every 10 ms; `ru_maxrss` is not used because a child spawned from this
/// big process may be charged this process's pages before it executes).
pub fn wait(child: Child, started: Instant, peak_so_far: u64) -> std::io::Result<Exit> {
    let watched = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = peak_so_far;
        while let Ok(u) = sample(watched) {
            if u.peak_rss == 0 {
                break; // a zombie: its memory is gone
            }
            peak = peak.max(u.peak_rss);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, status and usage point to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::mem::forget(child); // already reaped
    let peak_rss = sampler.join().unwrap_or(0);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Exit {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        wall: started.elapsed(),
        usage: Usage {
            cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
            peak_rss,
        },
    })
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    // SAFETY: kill has no memory preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}
