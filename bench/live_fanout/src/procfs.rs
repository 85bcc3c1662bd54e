//! Reading another process's memory and CPU time from /proc, and this process's own.

use std::collections::HashMap;

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&s, "VmRSS:")
}

fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// The fields of /proc/PID/stat this needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime, clock ticks.
    pub ticks: u64,
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(s: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        ticks: utime + stime,
    })
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU ticks of every live descendant of `root` (not `root` itself), by pid.
pub fn descendant_ticks(root: u32) -> HashMap<u32, u64> {
    let mut parent = HashMap::new();
    let mut ticks = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(st) = stat(pid) {
                parent.insert(pid, st.ppid);
                ticks.insert(pid, st.ticks);
            }
        }
    }
    let is_descendant = |mut pid: u32| {
        for _ in 0..64 {
            match parent.get(&pid) {
                Some(&p) if p == root => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    ticks
        .iter()
        .filter(|(&pid, _)| is_descendant(pid))
        .map(|(&pid, &t)| (pid, t))
        .collect()
}

/// CPU seconds used by descendants between two readings (a process that appeared in between
/// counts from zero).
pub fn descendant_cpu_s(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> f64 {
    let ticks: u64 = after
        .iter()
        .map(|(pid, &t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    ticks as f64 / clk_tck()
}

/// The whole machine's CPU time from the first line of /proc/stat, clock ticks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub user: u64,
    pub system: u64,
    /// irq + softirq: the kernel's network work on loopback mostly lands here or in system.
    pub irq: u64,
    pub idle: u64,
    pub steal: u64,
    pub total: u64,
}

pub fn machine() -> Option<Machine> {
    parse_machine(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine(s: &str) -> Option<Machine> {
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    Some(Machine {
        user: at(0) + at(1),
        system: at(2),
        irq: at(5) + at(6),
        idle: at(3) + at(4),
        steal: at(7),
        total: (0..8).map(at).sum(),
    })
}

impl Machine {
    pub fn since(&self, before: &Machine) -> Machine {
        Machine {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
            irq: self.irq.saturating_sub(before.irq),
            idle: self.idle.saturating_sub(before.idle),
            steal: self.steal.saturating_sub(before.steal),
            total: self.total.saturating_sub(before.total),
        }
    }
}

/// CPU ticks of each thread of a process, by thread id, with the thread's name.
pub fn thread_ticks(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let name = match (s.find('('), s.rfind(')')) {
            (Some(a), Some(b)) if a < b => s[a + 1..b].to_string(),
            _ => String::new(),
        };
        if let Some(st) = parse_stat(&s) {
            out.insert(tid, (name, st.ticks));
        }
    }
    out
}

/// This process's user + system CPU seconds.
pub fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes only the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft descriptor limit to the hard one; returns the limit in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_odd_name() {
        let s = "1234 (my (odd) name) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 \
                 4 0 12345 1000000 200 18446744073709551615";
        assert_eq!(
            parse_stat(s),
            Some(Stat {
                ppid: 77,
                ticks: 281
            })
        );
    }

    #[test]
    fn machine_line() {
        let m = parse_machine("cpu  10 2 30 400 5 6 7 8 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n").unwrap();
        assert_eq!(
            m,
            Machine {
                user: 12,
                system: 30,
                irq: 13,
                idle: 405,
                steal: 8,
                total: 468
            }
        );
    }

    #[test]
    fn own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(stat(me).is_some());
        assert!(!thread_ticks(me).is_empty());
        assert_eq!(
            status_field_kib("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"),
            Some(1234)
        );
    }
}
