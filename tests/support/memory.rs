//! Memory of a process as Linux reports it (`/proc/<pid>/status`): for tests that a peer's input cannot cost the
//! proxy memory in proportion.

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`: resident now, `VmHWM`: the peak since the last reset); 0 when
/// the process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':')).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Sets this process's peak resident size (`VmHWM`) back to its resident size now, so that the next reading of
/// the peak covers what runs from here on.
pub fn reset_own_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident size");
}
