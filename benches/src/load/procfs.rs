//! Linux /proc readings: the server's PID from its listening port, resident memory
//! (VmRSS) of a process, and this process's open-file limit.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

const TCP_LISTEN: &str = "0A";

/// Whether `host` (as found in a URL, IPv6 possibly in brackets) names this machine's
/// loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Socket inodes listening on `port` in a /proc/net/tcp or /proc/net/tcp6 table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            let (_, port_hex) = local.rsplit_once(':')?;
            let local_port = u16::from_str_radix(port_hex, 16).ok()?;
            (local_port == port && *state == TCP_LISTEN)
                .then(|| inode.parse::<u64>().ok())
                .flatten()
        })
        .filter(|inode| *inode != 0)
        .collect()
}

/// The process holding one of `inodes` as an open socket, scanning /proc/*/fd.
/// Processes whose fds cannot be read (other users) are skipped.
pub fn pid_owning_sockets(inodes: &[u64]) -> Option<u32> {
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if target
                .to_str()
                .is_some_and(|t| wanted.iter().any(|w| w == t))
            {
                return Some(pid);
            }
        }
    }
    None
}

/// PID of the process listening on TCP `port` on this machine.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    pid_owning_sockets(&inodes)
}

/// Parses the `VmRSS:` line of a /proc/PID/status text into bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    let factor = match unit {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        _ => 1,
    };
    Some(value * factor)
}

/// Resident set size of `pid` in bytes.
#[cfg(test)]
pub fn rss_bytes(pid: u32) -> Option<u64> {
    parse_vm_rss(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// A /proc file opened up front, so readings keep working when every other file
/// descriptor is taken by sockets.
struct ProcFile(fs::File);

impl ProcFile {
    fn open(path: &str) -> Option<Self> {
        fs::File::open(path).ok().map(Self)
    }

    /// The file's current text; `None` once the process is gone. /proc files are
    /// regenerated when read again from offset 0.
    fn read(&self) -> Option<String> {
        let mut file = &self.0;
        file.seek(SeekFrom::Start(0)).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        Some(text)
    }
}

/// Reads VmRSS of one process through its /proc status file.
pub struct RssProbe {
    status: ProcFile,
}

impl RssProbe {
    pub fn of_pid(pid: u32) -> Option<Self> {
        Self::open(&format!("/proc/{pid}/status"))
    }

    pub fn of_self() -> Option<Self> {
        Self::open("/proc/self/status")
    }

    fn open(path: &str) -> Option<Self> {
        Some(Self {
            status: ProcFile::open(path)?,
        })
    }

    /// Current resident set size in bytes; `None` once the process is gone.
    pub fn rss_bytes(&self) -> Option<u64> {
        parse_vm_rss(&self.status.read()?)
    }
}

/// User plus system CPU time, in clock ticks, from a /proc/PID/stat text (fields 14 and
/// 15, counted after the parenthesised command name, which may hold spaces).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // After the name: state is field 3, so utime (14) is the 12th field here.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux when
/// getconf is missing). `unsafe` is forbidden in the workspace, so no sysconf call.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// Reads the CPU time (user + system, all threads) a process has used so far, through its
/// /proc stat file.
pub struct CpuProbe {
    stat: ProcFile,
    ticks_per_second: u64,
}

impl CpuProbe {
    pub fn of_pid(pid: u32) -> Option<Self> {
        Self::open(&format!("/proc/{pid}/stat"))
    }

    pub fn of_self() -> Option<Self> {
        Self::open("/proc/self/stat")
    }

    fn open(path: &str) -> Option<Self> {
        Some(Self {
            stat: ProcFile::open(path)?,
            ticks_per_second: clock_ticks_per_second(),
        })
    }

    /// CPU seconds used so far; `None` once the process is gone.
    pub fn cpu_seconds(&self) -> Option<f64> {
        Some(parse_cpu_ticks(&self.stat.read()?)? as f64 / self.ticks_per_second as f64)
    }
}

fn parse_limit(value: &str) -> Option<u64> {
    if value == "unlimited" {
        Some(u64::MAX)
    } else {
        value.parse().ok()
    }
}

/// Soft and hard "Max open files" from a /proc/PID/limits text.
pub fn parse_nofile(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line.trim_start_matches("Max open files").split_whitespace();
    Some((parse_limit(values.next()?)?, parse_limit(values.next()?)?))
}

pub fn nofile_limits() -> Option<(u64, u64)> {
    parse_nofile(&fs::read_to_string("/proc/self/limits").ok()?)
}

/// Raises this process's soft open-file limit to the hard limit. `unsafe` is forbidden in
/// the workspace, so this asks prlimit(1) to do it for our PID. Returns the soft limit in
/// effect afterwards.
pub fn raise_nofile_limit() -> Option<u64> {
    let (soft, hard) = nofile_limits()?;
    if soft >= hard {
        return Some(soft);
    }
    let hard_text = if hard == u64::MAX {
        "unlimited".to_owned()
    } else {
        hard.to_string()
    };
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("prlimit");
    let status = Command::new(prlimit)
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard_text}:{hard_text}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => nofile_limits().map(|(soft, _)| soft),
        _ => Some(soft),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP_TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 555555 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn reads_cpu_ticks_after_a_command_name_with_spaces() {
        let stat = "4242 (confab (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1751 545 0 0 20 0 9 0 12345 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1751 + 545));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
        let own = CpuProbe::of_self().expect("own stat").cpu_seconds();
        assert!(own.is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn finds_listening_inode_by_port() {
        assert_eq!(listening_inodes(TCP_TABLE, 8080), vec![424242]);
        assert_eq!(listening_inodes(TCP_TABLE, 22), vec![777]);
        assert!(listening_inodes(TCP_TABLE, 9999).is_empty());
    }

    #[test]
    fn parses_rss_and_limits() {
        let status = "Name:\tconfab\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_nofile(limits), Some((1024, 524_288)));
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("[::1]"));
        assert!(!is_loopback_host("example.com"));
        assert!(!is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn finds_own_listening_socket() {
        let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        let rss = rss_bytes(std::process::id());
        assert!(rss.is_some_and(|rss| rss > 0));
        let probe = RssProbe::of_pid(std::process::id());
        assert!(probe.is_some_and(|p| p.rss_bytes().is_some_and(|r| r > 0)));
        assert!(RssProbe::of_self().is_some_and(|p| p.rss_bytes().is_some()));
    }
}
