//! Resource use of a benchmarked process read from `/proc`: CPU seconds and peak resident memory.
//!
//! CPU comes from `/proc/<pid>/stat`: `utime + stime` of the process plus `cutime + cstime`, the
//! time of the children it has waited for. The Python glue forks `kubectl` (through `bash` for
//! some calls) and waits for each, so its figure includes every `kubectl` it ran; our agent forks
//! nothing. Peak memory is the largest of the process's own high-water mark (`VmHWM`) and the
//! summed `VmRSS` of the process and all its live descendants (found through
//! `/proc/<pid>/task/<tid>/children`), sampled every [`SAMPLE_EVERY`] by a thread: a `kubectl`
//! that lives less than a sampling period can be missed by the sum.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// How often the process tree's memory is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) of `pid` and of the children it has waited for.
pub fn cpu_seconds(pid: u32, ticks_per_sec: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14..=17.
    let ticks: f64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    Some(ticks / ticks_per_sec)
}

/// A `kB` field (`VmHWM`, `VmRSS`) of `/proc/<pid>/status`, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// `pid` and all its live descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children"));
            for child in children.unwrap_or_default().split_whitespace() {
                if let Ok(c) = child.parse::<u32>()
                    && !out.contains(&c)
                {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// Summed `VmRSS` of `pid` and its live descendants, in bytes, and how many processes that was.
pub fn tree_rss(pid: u32) -> (u64, usize) {
    let tree = process_tree(pid);
    let rss = tree.iter().filter_map(|p| status_bytes(*p, "VmRSS")).sum();
    (rss, tree.len())
}

/// Whether `/proc` exposes what the sampler reads (Linux with `CONFIG_PROC_CHILDREN`).
pub fn supported() -> bool {
    let me = std::process::id();
    Path::new(&format!("/proc/{me}/stat")).exists()
        && Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
}

/// Peak memory of a process tree, sampled on a background thread until [`Sampler::finish`].
pub struct Sampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<(u64, usize)>>,
}

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPeak {
    /// Largest of `VmHWM` and the sampled tree sum, in bytes.
    pub peak_rss_bytes: u64,
    /// Most processes seen in the tree at once.
    pub max_processes: usize,
    /// `VmRSS` of the root process when sampling stopped, in bytes.
    pub final_rss_bytes: u64,
}

impl Sampler {
    /// Starts sampling the tree rooted at `pid`.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let join = std::thread::spawn(move || {
            let (mut peak, mut procs) = (0u64, 0usize);
            while !flag.load(Ordering::Relaxed) {
                let (rss, n) = tree_rss(pid);
                peak = peak.max(rss);
                procs = procs.max(n);
                std::thread::sleep(SAMPLE_EVERY);
            }
            (peak, procs)
        });
        Self {
            pid,
            stop,
            join: Some(join),
        }
    }

    /// Stops sampling and returns the peak (the process must still be alive for `VmHWM`).
    pub fn finish(mut self) -> MemoryPeak {
        self.stop.store(true, Ordering::Relaxed);
        let (sampled, procs) = self
            .join
            .take()
            .and_then(|j| j.join().ok())
            .unwrap_or_default();
        let hwm = status_bytes(self.pid, "VmHWM").unwrap_or(0);
        MemoryPeak {
            peak_rss_bytes: hwm.max(sampled),
            max_processes: procs.max(1),
            final_rss_bytes: status_bytes(self.pid, "VmRSS").unwrap_or(0),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let ticks = clock_ticks();
        assert!(cpu_seconds(me, ticks).is_some_and(|s| s >= 0.0));
        assert!(status_bytes(me, "VmHWM").is_some_and(|b| b > 0));
        assert!(status_bytes(me, "VmNope").is_none());
        let (rss, n) = tree_rss(me);
        assert!(rss > 0 && n >= 1);
    }

    #[test]
    fn tree_includes_a_child() {
        let mut child = Command::new("sleep").arg("5").spawn().expect("sleep runs");
        let tree = process_tree(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(tree.contains(&child.id()), "{tree:?} lacks {}", child.id());
    }
}
