//! How fast `migrate` goes: the chunk size that keeps each chunk near a target time, an optional ceiling on
//! rows per second, and a pause while the `csmh` server reports replication lag above a limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tracing::{info, warn};

/// The smallest chunk, whatever the timing says.
const MIN_CHUNK_ROWS: u64 = 100;
/// How much one chunk's timing may change the next chunk's size, up or down.
const MAX_STEP: u64 = 2;

/// The number of rows the next chunk reads: adapted after every chunk so that a chunk takes about the target
/// time. ProxyState between the task that reads chunks and the one that writes them (hence the atomic).
#[derive(Debug)]
pub struct ChunkSizer {
    rows: AtomicU64,
    target: Duration,
    max_rows: u64,
}

impl ChunkSizer {
    /// Starts at `initial` rows (at most `max_rows`), aiming at chunks of `target`.
    pub fn new(initial: u64, max_rows: u64, target: Duration) -> ChunkSizer {
        let max_rows = max_rows.max(MIN_CHUNK_ROWS);
        ChunkSizer { rows: AtomicU64::new(initial.clamp(MIN_CHUNK_ROWS, max_rows)), target, max_rows }
    }

    /// The size of the next chunk.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Records that a chunk of `rows` took `elapsed`, and sizes the next one from that rate: at most twice or
    /// half the current size, so one slow or fast chunk does not swing it.
    pub fn record(&self, rows: u64, elapsed: Duration) {
        let current = self.rows();
        if rows < current / 2 {
            // A short chunk (the end of a pass) says little about the rate.
            return;
        }
        let rate = rows as f64 / elapsed.as_secs_f64().max(1e-3);
        let wanted = (rate * self.target.as_secs_f64()) as u64;
        let next = wanted.clamp(current / MAX_STEP, current.saturating_mul(MAX_STEP));
        self.rows.store(next.clamp(MIN_CHUNK_ROWS, self.max_rows), Ordering::Relaxed);
    }
}

/// Holds the copy to at most a number of rows per second, on average since it started.
#[derive(Debug)]
pub struct RateLimit {
    max_per_second: Option<u64>,
    started: Instant,
    rows: u64,
}

impl RateLimit {
    /// No more than `max_per_second` rows a second; no limit with `None`.
    pub fn new(max_per_second: Option<u64>) -> RateLimit {
        RateLimit { max_per_second, started: Instant::now(), rows: 0 }
    }

    /// Counts `rows` copied, then sleeps for as long as the copy is ahead of the limit.
    pub async fn copied(&mut self, rows: u64) {
        self.rows += rows;
        let Some(max) = self.max_per_second.filter(|max| *max > 0) else { return };
        let due = Duration::from_secs_f64(self.rows as f64 / max as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(ahead).await;
        }
    }
}

/// Waits while the server reports replication lag above a limit. Asks at most once a second; a server that is
/// not a replica, or that does not let this account ask, is not watched.
#[derive(Debug)]
pub struct LagWatch {
    limit: Duration,
    watching: bool,
    last_asked: Option<Instant>,
}

/// How often a lagging server is asked again.
const LAG_POLL: Duration = Duration::from_secs(1);

impl LagWatch {
    /// Pauses while the lag is above `limit`.
    pub fn new(limit: Duration) -> LagWatch {
        LagWatch { limit, watching: true, last_asked: None }
    }

    /// Returns once `conn`'s server lags no more than the limit (at once when it is not a replica, or was
    /// asked less than a second ago).
    pub async fn wait(&mut self, conn: &mut Conn) {
        if !self.watching || self.last_asked.is_some_and(|at| at.elapsed() < LAG_POLL) {
            return;
        }
        let mut paused = false;
        loop {
            self.last_asked = Some(Instant::now());
            match replication_lag(conn).await {
                Lag::NotAReplica => {
                    self.watching = false;
                    return;
                }
                Lag::Seconds(lag) if Duration::from_secs(lag) > self.limit => {
                    if !paused {
                        let limit = self.limit.as_secs();
                        info!(lag_seconds = lag, limit_seconds = limit, "replication lag above the limit; pausing");
                    }
                    paused = true;
                    tokio::time::sleep(LAG_POLL).await;
                }
                Lag::Seconds(_) | Lag::Unknown => {
                    if paused {
                        info!("replication lag back under the limit; copying again");
                    }
                    return;
                }
            }
        }
    }
}

/// What a server says of its replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lag {
    /// It replicates from no one (or will not say): nothing to wait for, ever.
    NotAReplica,
    /// It is a replica whose lag is unknown (replication stopped): copying goes on.
    Unknown,
    /// The replica's lag in seconds (the largest of its channels).
    Seconds(u64),
}

/// Asks `SHOW REPLICA STATUS`, or `SHOW SLAVE STATUS` on servers too old for it.
async fn replication_lag(conn: &mut Conn) -> Lag {
    for statement in ["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"] {
        match conn.query::<mysql_async::Row, _>(statement).await {
            Ok(rows) => return lag_of(&rows),
            Err(mysql_async::Error::Server(error)) if error.code == ER_PARSE_ERROR => continue,
            Err(error) => {
                warn!(
                    %error,
                    "cannot read the replication status, so replication lag is not watched (the account needs \
                     REPLICATION CLIENT, or SLAVE MONITOR on MariaDB)"
                );
                return Lag::NotAReplica;
            }
        }
    }
    Lag::NotAReplica
}

/// MySQL's syntax error, the answer of servers that know only `SHOW SLAVE STATUS`.
const ER_PARSE_ERROR: u16 = 1064;

fn lag_of(rows: &[mysql_async::Row]) -> Lag {
    if rows.is_empty() {
        return Lag::NotAReplica;
    }
    let mut lag = Lag::Unknown;
    for row in rows {
        let seconds = ["Seconds_Behind_Master", "Seconds_Behind_Source"]
            .iter()
            .find_map(|column| row.get_opt::<Option<u64>, _>(*column).and_then(Result::ok).flatten());
        if let Some(seconds) = seconds {
            lag = match lag {
                Lag::Seconds(worst) => Lag::Seconds(worst.max(seconds)),
                _ => Lag::Seconds(seconds),
            };
        }
    }
    lag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_toward_the_target_time_at_most_twofold() {
        let sizer = ChunkSizer::new(1_000, 1_000_000, Duration::from_millis(500));
        sizer.record(1_000, Duration::from_millis(10));
        assert_eq!(sizer.rows(), 2_000);
        sizer.record(2_000, Duration::from_millis(400));
        assert_eq!(sizer.rows(), 2_500);
        sizer.record(2_500, Duration::from_secs(10));
        assert_eq!(sizer.rows(), 1_250);
    }

    #[test]
    fn chunks_stay_within_bounds_and_short_chunks_say_nothing() {
        let sizer = ChunkSizer::new(150, 300, Duration::from_millis(500));
        sizer.record(150, Duration::from_millis(1));
        assert_eq!(sizer.rows(), 300);
        sizer.record(10, Duration::from_secs(60));
        assert_eq!(sizer.rows(), 300);
        let slow = ChunkSizer::new(100, 300, Duration::from_millis(500));
        slow.record(100, Duration::from_secs(60));
        assert_eq!(slow.rows(), MIN_CHUNK_ROWS);
    }

    fn status_row(column: &str, value: mysql_async::Value) -> mysql_async::Row {
        use mysql_async::consts::ColumnType;
        let columns = [mysql_async::Column::new(ColumnType::MYSQL_TYPE_LONGLONG).with_name(column.as_bytes())];
        mysql_common::row::new_row(vec![value], columns.into())
    }

    #[test]
    fn the_lag_is_the_worst_channels_and_a_server_without_channels_is_no_replica() {
        assert_eq!(lag_of(&[]), Lag::NotAReplica);
        let mariadb = status_row("Seconds_Behind_Master", mysql_async::Value::Int(3));
        let mysql = status_row("Seconds_Behind_Source", mysql_async::Value::Bytes(b"12".to_vec()));
        assert_eq!(lag_of(&[mariadb, mysql]), Lag::Seconds(12));
        assert_eq!(lag_of(&[status_row("Seconds_Behind_Master", mysql_async::Value::NULL)]), Lag::Unknown);
    }

    #[tokio::test]
    async fn the_rate_limit_sleeps_while_ahead() {
        let mut limit = RateLimit::new(Some(10_000));
        let started = Instant::now();
        limit.copied(500).await;
        assert!(started.elapsed() >= Duration::from_millis(45), "{:?}", started.elapsed());
        let mut unlimited = RateLimit::new(None);
        let started = Instant::now();
        unlimited.copied(1_000_000).await;
        assert!(started.elapsed() < Duration::from_millis(45));
    }
}
