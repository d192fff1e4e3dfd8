//! CPU time and memory of a process, from Linux `/proc` (proc(5)).

use std::fs;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux for every
/// mainstream architecture; `getconf CLK_TCK` prints it).
pub const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU seconds of process `pid` (fields 14 and 15 of `/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields restart after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0], so utime (14) is fields[11] and stime (15) fields[12].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// A `kB` line of `/proc/PID/status`, such as `VmRSS` or `VmHWM`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn loadavg1() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(status_kib(pid, "VmHWM").unwrap() > 0);
        assert!(loadavg1().is_some());
    }
}
