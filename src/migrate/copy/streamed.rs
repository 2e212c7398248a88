//! One pass of the copy across two servers: rows stream from the old table's server into multi-row INSERTs on
//! the extended table's server, the next chunk read while the previous one is written.
//!
//! Two tasks run side by side on their own connections: the reader selects a chunk (`WHERE id > last AND
//! id <= target ORDER BY id LIMIT n`, binary protocol) and turns its rows into INSERT statements of a bounded
//! size; the writer executes them in one transaction per chunk and commits each chunk with its checkpoint. At
//! most two statements wait between them, and their buffers go back to the reader, so memory is a few
//! statements' worth whatever the chunk size. Throttling happens in the reader, before a chunk's SELECT, so no
//! result set stays open while the copy pauses.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Statement};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::run::{Run, csmh_error, edxapp_error};
use super::server_side::Throttle;
use super::sql::InsertBuilder;
use super::throttle::ChunkSizer;
use crate::migrate::MigrateError;
use crate::migrate::schema::{COLUMN_LIST, COLUMNS};

/// Statements waiting between the reader and the writer.
const IN_FLIGHT: usize = 2;
/// The position of `id` among [`COLUMNS`].
const ID_COLUMN: usize = 5;

/// What the reader hands the writer.
enum Piece {
    /// A complete INSERT of some of the chunk's rows.
    Statement(Vec<u8>),
    /// The chunk is complete.
    ChunkEnd(ChunkEnd),
}

/// The end of a chunk: the range it covered and what it held.
struct ChunkEnd {
    /// The chunk covered ids above the previous chunk's `to` and up to this one.
    to: u64,
    /// Rows read.
    rows: u64,
    /// Their ids, kept only when the extended table already has rows in the pass's range.
    ids: Vec<u64>,
    /// When the reader started it.
    started: Instant,
}

/// A pass's fixed settings.
pub struct Streamed<'a> {
    /// Builds the INSERTs.
    pub builder: &'a InsertBuilder,
    /// The size at which a statement is sent (the last row may take it a little over).
    pub statement_bytes: usize,
    /// Whether the extended table already has rows in the pass's range.
    pub overlap: bool,
}

impl Streamed<'_> {
    /// Copies every old row with an id above `run.last_id` and up to `run.target_id`, reading on `edxapp` and
    /// writing on `csmh`.
    pub async fn pass(
        &self,
        edxapp: &mut Conn,
        csmh: &mut Conn,
        run: &mut Run<'_>,
        throttle: Throttle<'_>,
    ) -> Result<(), MigrateError> {
        let select = format!(
            "SELECT {COLUMN_LIST} FROM {} WHERE `id` > ? AND `id` <= ? ORDER BY `id` LIMIT ?",
            run.site.old.quoted()
        );
        let select = edxapp.prep(select).await.map_err(|source| edxapp_error("prepare the chunk's SELECT", source))?;
        let (pieces_tx, pieces_rx) = mpsc::channel(IN_FLIGHT);
        let (spare_tx, spare_rx) = mpsc::channel(IN_FLIGHT + 1);
        let (from, target) = (run.last_id, run.target_id);
        let sizer = throttle.sizer;
        let reader = self.read(edxapp, &select, (from, target), throttle, pieces_tx, spare_rx);
        let writer = self.write(csmh, run, sizer, pieces_rx, spare_tx);
        tokio::try_join!(reader, writer)?;
        Ok(())
    }

    /// The reader: chunks of rows into statements.
    async fn read(
        &self,
        conn: &mut Conn,
        select: &Statement,
        (from, target): (u64, u64),
        throttle: Throttle<'_>,
        pieces: mpsc::Sender<Piece>,
        mut spare: mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), MigrateError> {
        let mut last = from;
        let mut buf = Vec::with_capacity(self.statement_bytes * 2);
        while last < target {
            throttle.lag.wait(throttle.lag_conn).await;
            let limit = throttle.sizer.rows();
            let started = Instant::now();
            let mut result = conn
                .exec_iter(select, (last, target, limit))
                .await
                .map_err(|source| edxapp_error("read a chunk", source))?;
            let mut end = ChunkEnd { to: last, rows: 0, ids: Vec::new(), started };
            self.builder.start(&mut buf);
            while let Some(row) = result.next().await.map_err(|source| edxapp_error("read a chunk", source))? {
                let id: u64 = row.get(ID_COLUMN).ok_or_else(|| bad_row(&row))?;
                end.to = id;
                end.rows += 1;
                if self.overlap {
                    end.ids.push(id);
                }
                self.builder.push_row(&mut buf, &row);
                if buf.len() >= self.statement_bytes {
                    buf = self.send_statement(&pieces, &mut spare, buf).await?;
                }
            }
            drop(result);
            if !self.builder.is_empty(&buf) {
                buf = self.send_statement(&pieces, &mut spare, buf).await?;
            }
            if end.rows < limit {
                end.to = target;
            }
            last = end.to;
            let rows = end.rows;
            pieces.send(Piece::ChunkEnd(end)).await.map_err(|_| writer_gone())?;
            throttle.rate.copied(rows).await;
        }
        Ok(())
    }

    /// Ends the statement in `buf`, hands it to the writer, and returns a buffer to go on with.
    async fn send_statement(
        &self,
        pieces: &mpsc::Sender<Piece>,
        spare: &mut mpsc::Receiver<Vec<u8>>,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, MigrateError> {
        self.builder.finish(&mut buf);
        pieces.send(Piece::Statement(buf)).await.map_err(|_| writer_gone())?;
        let mut next = spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(self.statement_bytes * 2));
        self.builder.start(&mut next);
        Ok(next)
    }

    /// The writer: statements into transactions, one per chunk, each committed with its checkpoint.
    async fn write(
        &self,
        conn: &mut Conn,
        run: &mut Run<'_>,
        sizer: &ChunkSizer,
        mut pieces: mpsc::Receiver<Piece>,
        spare: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), MigrateError> {
        let mut in_transaction = false;
        let mut from = run.last_id;
        while let Some(piece) = pieces.recv().await {
            if !in_transaction {
                conn.query_drop("BEGIN").await.map_err(|source| csmh_error("start a chunk", source))?;
                in_transaction = true;
            }
            match piece {
                Piece::Statement(statement) => {
                    conn.query_drop(&statement).await.map_err(|source| csmh_error("write a chunk", source))?;
                    let _ = spare.try_send(statement);
                }
                Piece::ChunkEnd(end) => {
                    if self.overlap {
                        remove_extra(conn, run, (from, end.to), &end.ids).await?;
                    }
                    run.commit_chunk(conn, end.to, end.rows).await?;
                    in_transaction = false;
                    from = end.to;
                    sizer.record(end.rows, end.started.elapsed());
                }
            }
        }
        Ok(())
    }
}

/// Deletes the extended rows with ids in `(from, to]` that are not among the chunk's `ids` (sorted): rows
/// deleted from the old table after an earlier copy.
async fn remove_extra(conn: &mut Conn, run: &Run<'_>, (from, to): (u64, u64), ids: &[u64]) -> Result<(), MigrateError> {
    let extended = run.site.extended.quoted();
    let present: Vec<u64> = conn
        .exec(format!("SELECT `id` FROM {extended} WHERE `id` > ? AND `id` <= ?"), (from, to))
        .await
        .map_err(|source| csmh_error("read the extended table's ids of a chunk", source))?;
    let extra: Vec<String> =
        present.into_iter().filter(|id| ids.binary_search(id).is_err()).map(|id| id.to_string()).collect();
    for batch in extra.chunks(10_000) {
        let sql = format!("DELETE FROM {extended} WHERE `id` IN ({})", batch.join(","));
        conn.query_drop(sql)
            .await
            .map_err(|source| csmh_error("remove extended rows the old table no longer has", source))?;
    }
    Ok(())
}

/// A row of the old table without a usable id.
fn bad_row(row: &mysql_async::Row) -> MigrateError {
    let columns = COLUMNS.len();
    MigrateError::Refused(format!("the old table returned a row without an id ({} of {columns} columns)", row.len()))
}

/// The writer stopped (its error is the one reported).
fn writer_gone() -> MigrateError {
    MigrateError::Refused("the writer stopped".to_owned())
}
