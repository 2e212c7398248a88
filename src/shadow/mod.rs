//! Shadow comparison: evidence, from edxapp's own reads, that the extended table alone answers them as both tables
//! do — before `ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES` is turned off (docs/routing.md, "Shadow comparison").
//!
//! While reads come from both tables, `[shadow] sample` of the merged reads are also answered from the extended
//! table alone, as the next stage would answer them: the session keeps the rows it sent the client
//! ([`Capture`]), and after the client has its whole answer hands them, with the next stage's statement, to one
//! worker per proxy ([`worker`]). The worker runs that statement on a connection of its own to the `csmh`
//! server and compares the two answers row by row ([`compare`]). The client's read never waits for any of it:
//! a sample is dropped, and counted, when the worker is behind or the answer is too large to keep.

pub mod compare;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::history::{Stage, routing_table};
use crate::metrics::ShadowCounters;
use crate::protocol::capabilities::Negotiated;
use crate::protocol::packets;
use crate::resolver::Resolver;
use crate::routing::{Form, Route, Router};
use crate::state::ConfigSnapshot;

/// The most row bytes of a client's answer kept for a comparison; a larger answer is not compared.
pub const MAX_CAPTURED_BYTES: usize = 1 << 20;
/// Samples waiting for the worker; beyond them a sample is dropped (and counted as skipped).
const QUEUE: usize = 8;

/// How a configuration compares reads: its fraction, and the router of the stage that reads the extended table
/// alone, which gives the statement to compare with.
#[derive(Debug)]
pub struct ShadowPlan {
    /// The fraction of merged reads compared.
    pub sample: f64,
    router: Router,
}

impl ShadowPlan {
    /// The plan of a configuration whose `[shadow] sample` is `sample` (`None` when it is 0), routing as
    /// `router` does but for the stage that reads the extended table alone.
    pub fn new(sample: f64, router: &Router) -> Option<ShadowPlan> {
        if sample <= 0.0 {
            return None;
        }
        let table = routing_table(Stage::ExtendedTableOnlyReads.flags()).ok()?;
        let router = Router::new(table, router.old().clone(), router.extended().clone(), router.topology());
        Some(ShadowPlan { sample, router })
    }

    /// The statement that reads the extended table alone in place of the client's `sql`, if the next stage
    /// sends it to one server as one statement (a read whose subqueries must first run on `edxapp` is not
    /// compared).
    pub fn statement(&self, sql: &[u8]) -> Option<Vec<u8>> {
        match self.router.classify(sql, Form::Query).into_route() {
            Route::Rewrite(rewritten) if rewritten.inline.is_empty() => Some(rewritten.sql),
            _ => None,
        }
    }
}

/// The proxy's shadow comparison: which reads are sampled, the queue to the worker, and the counts.
#[derive(Debug)]
pub struct Shadow {
    seen: AtomicU64,
    queue: mpsc::Sender<Sample>,
    /// The worker's end of the queue, until the first sample starts it.
    waiting: Mutex<Option<mpsc::Receiver<Sample>>>,
    counters: ShadowCounters,
    /// Where the worker looks the `csmh` server's name up.
    resolver: Arc<Resolver>,
}

impl Shadow {
    /// A shadow comparison counting into `counters`, its worker not yet started; the worker looks the `csmh`
    /// server's name up through `resolver`.
    pub fn new(counters: ShadowCounters, resolver: Arc<Resolver>) -> Shadow {
        let (queue, waiting) = mpsc::channel(QUEUE);
        Shadow { seen: AtomicU64::new(0), queue, waiting: Mutex::new(Some(waiting)), counters, resolver }
    }

    /// Whether the next merged read is compared, `fraction` of them being: spread evenly (the `n`th read is
    /// when `n × fraction` reaches a whole number), so a fraction of 0.01 compares every hundredth read.
    pub fn samples_next(&self, fraction: f64) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * fraction).floor() > (n * fraction).floor()
    }

    /// Hands `sample` to the worker (started on first use), or drops and counts it when the worker is behind.
    pub fn submit(&self, sample: Sample) {
        if let Some(receiver) = self.waiting.lock().unwrap_or_else(PoisonError::into_inner).take() {
            tokio::spawn(worker::run(receiver, self.counters.clone(), Arc::clone(&self.resolver)));
        }
        if self.queue.try_send(sample).is_err() {
            self.counters.skipped.inc();
        }
    }

    /// Counts a sampled read that could not be compared (too large, or not a single statement in the next
    /// stage).
    pub fn skipped(&self) {
        self.counters.skipped.inc();
    }
}

/// A sampled read, while its answer streams to the client: the rows kept, up to [`MAX_CAPTURED_BYTES`].
#[derive(Debug)]
pub struct Capture {
    statement: Vec<u8>,
    id_column: Option<usize>,
    columns: usize,
    rows: Vec<Bytes>,
    bytes: usize,
    state: CaptureState,
}

/// Where a capture stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaptureState {
    /// Rows are being kept.
    Keeping,
    /// The answer outgrew [`MAX_CAPTURED_BYTES`]: it will not be compared.
    TooLarge,
    /// The client has the whole answer, every row kept.
    Complete,
}

impl Capture {
    /// A capture for a read to compare with `statement` (on the extended table alone).
    pub fn new(statement: Vec<u8>) -> Capture {
        Capture { statement, id_column: None, columns: 0, rows: Vec::new(), bytes: 0, state: CaptureState::Keeping }
    }

    /// The column definitions the client got; the history id is found among them by its name, `id`.
    pub fn columns(&mut self, definitions: &[Bytes], caps: Negotiated) {
        self.columns = definitions.len();
        self.id_column = definitions.iter().position(|definition| {
            packets::standard_column_definition(definition, caps.extended_metadata())
                .and_then(|definition| packets::column_name(&definition).map(|name| name.eq_ignore_ascii_case(b"id")))
                .unwrap_or(false)
        });
    }

    /// Keeps a row the client got (a shared reference to its bytes, not a copy).
    pub fn row(&mut self, row: &Bytes) {
        if self.state != CaptureState::Keeping {
            return;
        }
        self.bytes += row.len();
        if self.bytes > MAX_CAPTURED_BYTES {
            self.state = CaptureState::TooLarge;
            self.rows = Vec::new();
        } else {
            self.rows.push(row.clone());
        }
    }

    /// The client has the whole answer.
    pub fn complete(&mut self) {
        if self.state == CaptureState::Keeping {
            self.state = CaptureState::Complete;
        }
    }

    /// The sample to compare, once the client has the whole answer and it was small enough; `None` when it
    /// outgrew the capture or the read did not end with rows the merge sent (an error, or the `UNION ALL` form
    /// answered it).
    pub fn into_sample(self, snapshot: Arc<ConfigSnapshot>) -> Option<Sample> {
        (self.state == CaptureState::Complete).then(|| Sample {
            snapshot,
            statement: self.statement,
            id_column: self.id_column,
            columns: self.columns,
            rows: self.rows,
        })
    }
}

/// A read to compare: the client's answer, and the statement that reads the extended table alone.
#[derive(Debug)]
pub struct Sample {
    snapshot: Arc<ConfigSnapshot>,
    statement: Vec<u8>,
    id_column: Option<usize>,
    columns: usize,
    rows: Vec<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_spread_evenly() {
        let shadow = Shadow::new(ShadowCounters::default(), Arc::default());
        let picked: Vec<bool> = (0..10).map(|_| shadow.samples_next(0.25)).collect();
        assert_eq!(picked.iter().filter(|picked| **picked).count(), 2);
        assert_eq!(picked, [false, false, false, true, false, false, false, true, false, false]);
        let every = Shadow::new(ShadowCounters::default(), Arc::default());
        assert!((0..5).all(|_| every.samples_next(1.0)));
    }

    #[test]
    fn a_capture_keeps_rows_until_it_outgrows_its_bound() {
        let mut capture = Capture::new(b"SELECT 1".to_vec());
        capture.row(&Bytes::from_static(b"\x011"));
        capture.complete();
        let config = || crate::config::Config::parse(include_str!("../../proxy.toml")).expect("the example");
        let snapshot = || Arc::new(ConfigSnapshot::compile(config()).expect("a snapshot"));
        let sample = capture.into_sample(snapshot()).expect("small and complete");
        assert_eq!(sample.rows.len(), 1);
        let mut large = Capture::new(b"SELECT 1".to_vec());
        large.row(&Bytes::from(vec![0u8; MAX_CAPTURED_BYTES + 1]));
        large.complete();
        assert!(large.into_sample(snapshot()).is_none());
        let unfinished = Capture::new(b"SELECT 1".to_vec());
        assert!(unfinished.into_sample(snapshot()).is_none());
    }
}
