//! The `process_*` series Prometheus's own clients export (CPU seconds, resident memory, open
//! and maximum file descriptors, threads, start time), read from `/proc/self` when scraped:
//! nothing runs between scrapes. Where `/proc` is missing (not Linux) the series are absent.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux's `USER_HZ`: the unit of the times in `/proc/self/stat`, 100 on every architecture
/// the kernel supports.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads `/proc/self` on each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

/// What one scrape read.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub threads: Option<i64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
}

impl Sample {
    /// This process, now.
    pub fn read() -> Sample {
        let mut s = Sample::default();
        if let Ok(stat) = fs::read_to_string("/proc/self/stat") {
            let boot = fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| boot_time(&t));
            s.parse_stat(&stat, boot);
        }
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            s.resident_bytes = status_kb(&status, "VmRSS:").map(|kb| kb * 1024);
        }
        s.open_fds = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64);
        s.max_fds = fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l));
        s
    }

    /// Fields of `/proc/self/stat` (see proc(5)); the command name, in parentheses, may hold
    /// spaces, so fields are counted after its last `)`.
    fn parse_stat(&mut self, stat: &str, boot_time: Option<f64>) {
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        // rest starts at field 3 (state).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            self.cpu_seconds = Some((utime + stime) / TICKS_PER_SECOND);
        }
        self.threads = field(20).map(|v| v as i64);
        self.virtual_bytes = field(23).map(|v| v as i64);
        if let (Some(start), Some(boot)) = (field(22), boot_time) {
            self.start_time_seconds = Some(boot + start / TICKS_PER_SECOND);
        }
    }
}

fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn status_kb(status: &str, key: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn max_open_files(limits: &str) -> Option<i64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::read();
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<i64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                s.max_fds,
            ),
            ("process_threads", "Number of OS threads", s.threads),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        if let Some(v) = s.start_time_seconds {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                m.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces_and_parens() {
        let stat = "4242 (busbar (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 7 0 12345 104857600 2000 18446744073709551615";
        let mut s = Sample::default();
        s.parse_stat(stat, Some(1_700_000_000.0));
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.virtual_bytes, Some(104_857_600));
        assert_eq!(s.start_time_seconds, Some(1_700_000_123.45));
    }

    #[test]
    fn malformed_proc_files_give_no_value_and_no_panic() {
        let mut s = Sample::default();
        s.parse_stat("garbage", Some(0.0));
        s.parse_stat("1 (x) S", None);
        assert_eq!(s, Sample::default());
        assert_eq!(
            max_open_files("Max open files  1024  4096  files\n"),
            Some(1024)
        );
        assert_eq!(max_open_files("nothing"), None);
        assert_eq!(status_kb("VmRSS:\t  5120 kB\n", "VmRSS:"), Some(5120));
    }

    #[test]
    fn this_process_reads() {
        let s = Sample::read();
        assert!(s.resident_bytes.unwrap() > 0);
        assert!(s.open_fds.unwrap() > 0);
        assert!(s.cpu_seconds.is_some());
    }
}
