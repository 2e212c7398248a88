//! What the benchmarks share: the lock that keeps two of them from measuring at the same time, for the
//! end-to-end benchmarks (`passthrough`, `connect`) the relays they start and the parts of their reports, and
//! the delay line that puts a network's round trip before a server (`connect`, `routing`).

use std::os::fd::AsRawFd;

pub mod delay;
pub mod processes;
pub mod report;

/// Holds `/tmp/csmh-bench.lock` exclusively until dropped, so that no other benchmark measures meanwhile.
pub struct BenchLock {
    _file: std::fs::File,
}

impl BenchLock {
    /// Takes the lock, waiting while another benchmark holds it.
    pub fn acquire() -> BenchLock {
        let path = "/tmp/csmh-bench.lock";
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the bench lock");
        // SAFETY: flock on a descriptor this struct owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("waiting for {path} (another benchmark is measuring)");
            // SAFETY: as above; blocks until the other holder is done.
            assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0, "flock {path}");
        }
        BenchLock { _file: file }
    }
}
