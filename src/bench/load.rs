//! How busy the rest of the machine was while `bench` timed: the CPU time that other
//! processes (and, in a virtual machine, the hypervisor's "steal") took, from /proc on
//! Linux. On a shared machine a busy neighbour moves lavapipe's figures by tens of percent
//! (measured: mlp's step 9.5 ms alone, 13-19 ms with a training run beside it), so `bench`
//! prints this next to them. Elsewhere nothing is measured.

/// Above this share of the CPUs taken by other processes, `bench` says its figures are not
/// reliable (and `--compare` points it out): a tenth of the machine's time is about the
/// run-to-run spread seen with the machine to itself.
pub const BUSY_MACHINE: f64 = 0.1;

/// A reading of the machine's and this process's CPU time, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuSample {
    /// Busy ticks of all CPUs together (user, nice, system, irq, softirq, steal).
    pub busy: u64,
    /// Every tick of all CPUs together, idle included.
    pub total: u64,
    /// This process's user + system ticks (all its threads: lavapipe's workers are ours).
    pub own: u64,
}

/// Reads /proc/stat and /proc/self/stat; None where they do not exist or cannot be read.
pub fn sample() -> Option<CpuSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (busy, total) = parse_cpu_line(stat.lines().next()?)?;
    Some(CpuSample {
        busy,
        total,
        own: parse_own_ticks(&own)?,
    })
}

/// The share of all CPUs' time between two samples that went to other processes: 0 on an
/// otherwise idle machine, 0.5 when something else kept one of two cores busy.
pub fn others_share(start: &CpuSample, end: &CpuSample) -> Option<f64> {
    let total = end.total.checked_sub(start.total)?;
    if total == 0 {
        return None;
    }
    let busy = end.busy.checked_sub(start.busy)?;
    let own = end.own.checked_sub(start.own)?;
    Some((busy.saturating_sub(own) as f64 / total as f64).clamp(0.0, 1.0))
}

/// (busy, total) ticks from /proc/stat's first line: `cpu user nice system idle iowait irq
/// softirq steal guest guest_nice` (guest time is already inside user and nice).
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Some((busy, busy + v[3] + v[4]))
}

/// utime + stime (fields 14 and 15) of /proc/self/stat. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last ')'.
fn parse_own_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state): utime is the 12th field from there.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_line_and_the_process_ticks() {
        let line = "cpu  100 5 50 800 20 3 2 10 0 0";
        assert_eq!(parse_cpu_line(line), Some((170, 990)));
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_cpu_line("cpu 1 2 3"), None);
        // A command name with spaces and parentheses.
        let stat = "4242 (wgpu (fmnist) x) R 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 9 0";
        assert_eq!(parse_own_ticks(stat), Some(290));
        assert_eq!(parse_own_ticks("garbage"), None);
    }

    #[test]
    fn the_share_of_others_is_busy_time_not_ours_over_all_time() {
        let s = |busy, total, own| CpuSample { busy, total, own };
        // 200 ticks of 2 CPUs: we used 100, someone else 60, the rest idle.
        let share = others_share(&s(1000, 5000, 300), &s(1160, 5200, 400)).unwrap();
        assert!((share - 0.3).abs() < 1e-9, "{share}");
        // Alone: all busy time is ours.
        assert_eq!(others_share(&s(0, 0, 0), &s(100, 200, 100)), Some(0.0));
        // No time passed, or counters that went backwards: nothing to say.
        assert_eq!(others_share(&s(5, 10, 1), &s(5, 10, 1)), None);
        assert_eq!(others_share(&s(5, 10, 1), &s(4, 20, 1)), None);
    }

    #[test]
    fn this_machine_can_be_sampled_on_linux() {
        if cfg!(target_os = "linux") {
            let a = sample().expect("/proc readable");
            // Spin a little so some ticks pass.
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while t.elapsed().as_millis() < 50 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            let b = sample().unwrap();
            assert!(b.total >= a.total && b.own >= a.own && b.busy >= a.busy);
        }
    }
}
