//! Where the scale benchmark's parties run and how much CPU each one used (the etcd-latency
//! phases of bench_scale.rs). In a real cluster every agent runs on its own machine and etcd on
//! its own; on one small machine the simulated agents would otherwise take etcd's CPU and the
//! latency probe would measure CPU starvation instead of etcd. So etcd and the probe get
//! CPU 0 to themselves (as far as this run's processes go), and the real agent, the writer and
//! the model-only agents the other CPUs, the model-only agents at `SCHED_IDLE` so that they
//! never delay the real agent or the writer. The CPU each party used comes from `/proc`.

use std::process::Command;
use std::time::Duration;

/// The kernel's unit for the times in `/proc/<pid>/stat` and `/proc/stat` (USER_HZ: 100 on
/// every Linux architecture, whatever the scheduler's HZ).
const TICKS_PER_SEC: u64 = 100;

fn ticks(t: u64) -> Duration {
    Duration::from_millis(t * 1000 / TICKS_PER_SEC)
}

/// User + system CPU time of a process (all its threads, `/proc/<pid>`) or of one thread
/// (`/proc/thread-self`, `/proc/<pid>/task/<tid>`); zero once it is gone.
pub fn cpu_time(proc_dir: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: count from after it,
    // where field 3 (state) comes first, so utime (14) and stime (15) are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    ticks(f.iter().sum())
}

/// [`cpu_time`] of process `pid`.
pub fn process_cpu(pid: u32) -> Duration {
    cpu_time(&format!("/proc/{pid}"))
}

/// The calling thread's id (for `taskset`).
pub fn this_thread_id() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .expect("/proc/thread-self names the thread")
}

/// (busy, stolen) time of CPU `cpu` since boot, from `/proc/stat`: busy is user, nice,
/// system, irq and softirq (guest time is inside user); stolen is what the hypervisor gave to
/// other guests, time neither this machine's processes nor idle had.
pub fn core_times(cpu: usize) -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let want = format!("cpu{cpu}");
    let f: Vec<u64> = stat
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(want.as_str())).then(|| w.filter_map(|v| v.parse().ok()).collect())
        })
        .unwrap_or_default();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (ticks(at(0) + at(1) + at(2) + at(5) + at(6)), ticks(at(7)))
}

/// Which CPUs etcd (and the probe) and everything else of the run get: `taskset` lists.
#[derive(Debug, Clone)]
pub struct Placement {
    /// etcd and the latency probe: CPU 0.
    pub etcd: String,
    /// The real agent, the writer and the model-only agents: the other CPUs.
    pub agents: String,
}

/// The placement on this machine; `None` with a single CPU (nothing to separate).
pub fn placement() -> Option<Placement> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then(|| Placement {
        etcd: "0".into(),
        agents: if n == 2 {
            "1".into()
        } else {
            format!("1-{}", n - 1)
        },
    })
}

/// Restricts process `pid` (every thread it has; threads it starts later inherit it) or,
/// with `thread`, that one thread to the CPUs `cpus`.
pub fn pin(pid: u32, cpus: &str, thread: bool) {
    let mut cmd = Command::new("taskset");
    if !thread {
        cmd.arg("-a");
    }
    let out = cmd
        .args(["-p", "-c", cpus, &pid.to_string()])
        .output()
        .expect("taskset");
    assert!(
        out.status.success(),
        "taskset -c {cpus} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command that runs `program` on the CPUs `cpus`: `taskset -c <cpus> <program>`.
pub fn on(cpus: &str, program: &std::path::Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpus]).arg(program);
    cmd
}

/// Moves process `pid` (every thread) to `SCHED_IDLE`: it only gets CPU that no other task on
/// its CPUs wants.
pub fn make_idle(pid: u32) {
    let out = Command::new("chrt")
        .args(["--idle", "-a", "-p", "0", &pid.to_string()])
        .output()
        .expect("chrt");
    assert!(
        out.status.success(),
        "chrt --idle {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
