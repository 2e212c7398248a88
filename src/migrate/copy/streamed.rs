//! One pass of the copy across two servers: rows stream from the old table's server into multi-row INSERTs on
//! the extended table's server, the next chunks read while the previous ones are written.
//!
//! A reader selects a chunk (`WHERE id > last AND id <= target ORDER BY id LIMIT n`, binary protocol) and turns
//! its rows into INSERT statements of a bounded size; writers execute them, each chunk in one transaction, on
//! connections of their own. With two writers, the server inserts two chunks at once (the insert is where the
//! copy spends its time), but chunks still commit in id order: a writer commits its chunk, with the checkpoint,
//! only once the chunk before it has committed, so the checkpoint always means "every row up to here". At most
//! a few statements wait between the reader and the writers, and their buffers go back to the reader, so memory
//! is a few statements' worth whatever the chunk size. Throttling happens in the reader, before a chunk's
//! SELECT, so no result set stays open while the copy pauses.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Statement};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use super::pace::ChunkSizer;
use super::run::{Removal, Run, csmh_error, edxapp_error, query_error};
use super::sql::InsertBuilder;
use super::throttle::{KEEP_ALIVE, Throttle};
use crate::history::TableName;
use crate::migrate::schema::{COLUMN_LIST, COLUMNS};
use crate::migrate::{MigrateError, Site};
use crate::topology;

/// Statements waiting between the reader and each writer.
const IN_FLIGHT: usize = 2;
/// The position of `id` among [`COLUMNS`].
pub(super) const ID_COLUMN: usize = 5;

/// What the reader hands a writer.
enum Piece {
    /// A complete INSERT of some of the chunk's rows.
    Statement(Vec<u8>),
    /// The chunk is complete.
    ChunkEnd(ChunkEnd),
}

/// The end of a chunk: the range it covered and what it held.
struct ChunkEnd {
    /// The chunk's place in the pass, from 0: the order in which chunks commit.
    sequence: u64,
    /// The chunk covered ids above this one ...
    from: u64,
    /// ... and up to this one.
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
    /// In a re-copy: where the extended rows the old table no longer has are removed (then one writer only, so
    /// that chunks commit in order with their removals).
    pub removal: Option<Removal>,
}

/// What the writers share: the run (locked only to commit) and the number of chunks committed so far.
struct Commits<'r, 'a> {
    run: Mutex<&'r mut Run<'a>>,
    committed: watch::Sender<u64>,
    sizer: &'r ChunkSizer,
}

impl Streamed<'_> {
    /// Copies every old row with an id above `run.last_id` and up to `run.target_id`, reading on `edxapp` and
    /// writing on the `csmh` connections (two writers when two are given and the range holds no earlier copy;
    /// one otherwise, so that removing extended rows the old table no longer has never races another writer).
    pub async fn pass(
        &self,
        edxapp: &mut Conn,
        csmh: [&mut Conn; 2],
        run: &mut Run<'_>,
        throttle: &mut Throttle<'_>,
    ) -> Result<(), MigrateError> {
        let select = edxapp
            .prep(chunk_select(&run.site.old))
            .await
            .map_err(|source| edxapp_error("prepare the chunk's SELECT", source))?;
        let site = run.site;
        let (from, target) = (run.last_id, run.target_id);
        let [first, second] = csmh;
        let (first_tx, first_rx) = mpsc::channel(IN_FLIGHT);
        let (second_tx, second_rx) = mpsc::channel(IN_FLIGHT);
        let (spare_tx, spare_rx) = mpsc::channel(IN_FLIGHT * 2 + 1);
        let writers = if self.removal.is_some() {
            // The second writer gets nothing, and ends at once.
            drop(second_tx);
            vec![first_tx]
        } else {
            vec![first_tx, second_tx]
        };
        let commits = Commits { run: Mutex::new(run), committed: watch::Sender::new(0), sizer: throttle.sizer() };
        let reader = self.read(edxapp, &select, (from, target), throttle, writers, spare_rx);
        let first = self.write(first, site, &commits, first_rx, spare_tx.clone());
        let second = self.write(second, site, &commits, second_rx, spare_tx);
        tokio::try_join!(reader, first, second)?;
        Ok(())
    }

    /// The reader: chunks of rows into statements, chunk `n` to writer `n % writers`.
    async fn read(
        &self,
        conn: &mut Conn,
        select: &Statement,
        (from, target): (u64, u64),
        throttle: &mut Throttle<'_>,
        writers: Vec<mpsc::Sender<Piece>>,
        mut spare: mpsc::Receiver<Vec<u8>>,
    ) -> Result<(), MigrateError> {
        let mut last = from;
        let mut buf = Vec::with_capacity(self.statement_bytes * 2);
        let mut sequence = 0;
        while last < target {
            throttle.before_chunk(conn, "edxapp").await?;
            let pieces = &writers[(sequence % writers.len() as u64) as usize];
            let limit = throttle.sizer().rows();
            let started = Instant::now();
            let mut result = conn
                .exec_iter(select, (last, target, limit))
                .await
                .map_err(|source| edxapp_error("read a chunk", source))?;
            let mut end = ChunkEnd { sequence, from: last, to: last, rows: 0, ids: Vec::new(), started };
            self.builder.start(&mut buf);
            while let Some(row) = result.next().await.map_err(|source| edxapp_error("read a chunk", source))? {
                let id: u64 = row.get(ID_COLUMN).ok_or_else(|| bad_row(&row))?;
                end.to = id;
                end.rows += 1;
                if self.removal.is_some() {
                    end.ids.push(id);
                }
                self.builder.push_row(&mut buf, &row);
                if buf.len() >= self.statement_bytes {
                    buf = self.send_statement(pieces, &mut spare, buf).await?;
                }
            }
            drop(result);
            if !self.builder.is_empty(&buf) {
                buf = self.send_statement(pieces, &mut spare, buf).await?;
            }
            if end.rows < limit {
                end.to = target;
            }
            last = end.to;
            sequence += 1;
            let rows = end.rows;
            pieces.send(Piece::ChunkEnd(end)).await.map_err(|_| writer_gone())?;
            throttle.copied(rows);
        }
        Ok(())
    }

    /// Ends the statement in `buf`, hands it to a writer, and returns a buffer to go on with.
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

    /// A writer: statements into transactions, one per chunk, each committed with its checkpoint once the
    /// chunk before it has committed.
    async fn write(
        &self,
        conn: &mut Conn,
        site: &Site,
        commits: &Commits<'_, '_>,
        mut pieces: mpsc::Receiver<Piece>,
        spare: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), MigrateError> {
        let mut in_transaction = false;
        while let Some(piece) = next_piece(conn, &mut pieces).await? {
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
                    if let Some(range) = self.removal.and_then(|removal| removal.range((end.from, end.to))) {
                        remove_extra(conn, topology::Server::Csmh, &site.extended, range, &end.ids).await?;
                    }
                    let mut turn = commits.committed.subscribe();
                    turn.wait_for(|committed| *committed == end.sequence).await.map_err(|_| writer_gone())?;
                    commits.run.lock().await.commit_chunk(conn, end.to, end.rows).await?;
                    commits.committed.send_replace(end.sequence + 1);
                    commits.sizer.record(end.rows, end.started.elapsed());
                    in_transaction = false;
                }
            }
        }
        Ok(())
    }
}

/// The next piece for a writer, or `None` when the reader is done; pings `conn` while none comes, so that the
/// connection outlives a long pause of the reader.
async fn next_piece(conn: &mut Conn, pieces: &mut mpsc::Receiver<Piece>) -> Result<Option<Piece>, MigrateError> {
    loop {
        tokio::select! {
            piece = pieces.recv() => return Ok(piece),
            () = tokio::time::sleep(KEEP_ALIVE) => {
                conn.ping().await.map_err(|source| csmh_error("keep the connection open", source))?;
            }
        }
    }
}

/// The reader's SELECT of a chunk of `table` (the table copied from): after, up to (the pass's target), rows.
pub(super) fn chunk_select(table: &TableName) -> String {
    format!("SELECT {COLUMN_LIST} FROM {} WHERE `id` > ? AND `id` <= ? ORDER BY `id` LIMIT ?", table.quoted())
}

/// Deletes the rows of `table`, on `server` (the one the copy writes to, which `conn` reaches), with ids in
/// `(from, to]` that are not among the chunk's `ids` (sorted, read from the other table): rows deleted there after
/// an earlier copy. Returns how many were deleted.
pub(super) async fn remove_extra(
    conn: &mut Conn,
    server: topology::Server,
    table: &TableName,
    (from, to): (u64, u64),
    ids: &[u64],
) -> Result<u64, MigrateError> {
    let quoted = table.quoted();
    let present: Vec<u64> = conn
        .exec(format!("SELECT `id` FROM {quoted} WHERE `id` > ? AND `id` <= ?"), (from, to))
        .await
        .map_err(|source| query_error(server, &format!("read the ids of a chunk of {table}"), source))?;
    let extra: Vec<String> =
        present.into_iter().filter(|id| ids.binary_search(id).is_err()).map(|id| id.to_string()).collect();
    let mut removed = 0;
    for batch in extra.chunks(10_000) {
        let sql = format!("DELETE FROM {quoted} WHERE `id` IN ({})", batch.join(","));
        conn.query_drop(sql)
            .await
            .map_err(|source| query_error(server, "remove rows the table copied from no longer has", source))?;
        removed += conn.affected_rows();
    }
    Ok(removed)
}

/// A row of the table copied from without a usable id.
pub(super) fn bad_row(row: &mysql_async::Row) -> MigrateError {
    let columns = COLUMNS.len();
    MigrateError::Refused(format!(
        "the table copied from returned a row without an id ({} of {columns} columns)",
        row.len()
    ))
}

/// A writer stopped (its error is the one reported).
fn writer_gone() -> MigrateError {
    MigrateError::Refused("a writer stopped".to_owned())
}
