//! What `/proc` tells about a process: resident memory, open descriptors
//! and CPU time, for benchmarks that judge a server by what it costs.

use std::time::Duration;

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`): 100 on
/// Linux for every architecture this builds for.
const TICKS_PER_SECOND: f64 = 100.0;
pub const MIB: f64 = 1024.0 * 1024.0;

/// Resident set size in bytes (`VmRSS`).
pub fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

pub fn open_files(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// User plus system CPU time the process has used so far, all threads.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (2nd field) may hold spaces: count after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').context("a /proc stat line")?.1.split_whitespace().collect();
    // utime and stime are the stat line's 14th and 15th fields.
    let ticks = |i: usize| -> anyhow::Result<f64> { Ok(fields.get(i).context("utime/stime")?.parse::<f64>()?) };
    Ok(Duration::from_secs_f64((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_back_its_own_cost() {
        let me = std::process::id();
        assert!(resident_bytes(me).unwrap() > 1024 * 1024);
        assert!(open_files(me).unwrap() >= 3);
        let before = cpu_time(me).unwrap();
        // Spinning costs CPU, so the count must move: wait for that, with a
        // bound only against a count that never moves.
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while cpu_time(me).unwrap() <= before {
            assert!(started.elapsed() < Duration::from_secs(30), "30 s of spinning never showed in utime");
            for _ in 0..100_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
        }
    }
}
