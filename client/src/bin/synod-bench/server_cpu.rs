//! `--server-pid PID` (repeatable): the CPU time the servers spend during the measurement window,
//! read from Linux's `/proc/PID/stat` (user + system time of every thread, exited ones included)
//! at the window's start and end, so a report can say how much server CPU one request costs,
//! all servers summed.

use crate::Fatal;

/// Linux reports `/proc/PID/stat` times in USER_HZ ticks, fixed at 100 per second on every
/// architecture Linux supports (whatever the kernel's internal HZ).
const USER_HZ: u64 = 100;

/// CPU time used so far by the processes `pids`, summed, in µs.
pub fn cpu_us(pids: &[u32]) -> Result<u64, Fatal> {
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path)
            .map_err(|e| Fatal(format!("--server-pid {pid}: cannot read {path}: {e}")))?;
        total += ticks(&stat)
            .ok_or_else(|| Fatal(format!("--server-pid {pid}: unexpected format of {path}")))?
            * (1_000_000 / USER_HZ);
    }
    Ok(total)
}

/// utime + stime of one `/proc/PID/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces, so fields are counted after its closing parenthesis: the state is
/// field 3, utime field 14, stime field 15.
fn ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_skip_a_command_name_with_spaces() {
        let line = "4242 (synod main) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(ticks(line), Some(325));
        assert_eq!(ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_us(&[std::process::id()]).is_ok());
        assert!(cpu_us(&[u32::MAX]).is_err());
    }
}
