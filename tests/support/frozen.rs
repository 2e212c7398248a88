//! A server's process frozen (SIGSTOP) for the length of a test step, as a stalled VM or a full disk would
//! leave it: its kernel still accepts connections and buffers what is sent, nothing answers.

use std::time::Duration;

use csmh_proxy::sandbox::MariaDb;

/// Freezes a server's process (SIGSTOP) until dropped (SIGCONT).
pub struct Frozen(u32);

impl Frozen {
    /// Stops the server's process and waits until every one of its threads has stopped: a thread busy when the
    /// signal came could otherwise still answer.
    pub async fn server(server: &MariaDb) -> Frozen {
        let pid = server.pid();
        // SAFETY: kill(2) with a pid of a process this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        let frozen = Frozen(pid);
        let stopping = async {
            while !all_threads_stopped(pid) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), stopping).await.expect("the server stops within 60 s");
        frozen
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in its `stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses and may contain spaces.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}
