//! Processes seen through `/proc`: the children of a process (an agent's executors, orphans
//! handed to km local-up as their subreaper) and whether a process is gone.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One line of `/proc/<pid>/stat`, the parts km local-up reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The process's state letter (`R`, `S`, `Z`, …).
    pub state: char,
    /// Its parent.
    pub ppid: i32,
}

/// Parses `/proc/<pid>/stat` (the command name may hold spaces and parentheses; it ends at the
/// last `)`).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

/// The stat of a process, `None` when it is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether a process is still running (a zombie is not).
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// The processes whose parent is `parent`, zombies included.
pub fn children(parent: i32) -> Vec<(i32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .filter(|(_, s)| s.ppid == parent)
        .collect()
}

/// The command line of a process, for messages.
pub fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_owned()
}

/// Sends a signal; a process that is already gone is not an error.
pub fn signal(pid: i32, sig: Signal) {
    if let Err(e) = kill(Pid::from_raw(pid), sig)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pid, ?sig, "cannot signal: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed_past_odd_command_names() {
        let s = parse_stat("1234 (km) S 1 1234 1234 0 -1 4194560 0 0").unwrap();
        assert_eq!(s, Stat { state: 'S', ppid: 1 });
        let s = parse_stat("77 (a b) (c)) Z 42 77 77").unwrap();
        assert_eq!(s, Stat { state: 'Z', ppid: 42 });
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        let parent = stat(me).unwrap().ppid;
        assert!(children(parent).iter().any(|(p, _)| *p == me));
    }
}
