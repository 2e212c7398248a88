//! `csmh-proxy migrate --dry-run`: what a run would do, changing nothing. It reads what a run reads (the
//! checkpoint, the old table's ids, whether the extended table already has ids the pass needs) and refuses what
//! a run refuses, but takes no lock, creates no checkpoint table, writes no checkpoint and copies no row.
//!
//! It prints the plan (where the copy starts, up to which id, how chunks are copied, the throttles) and the
//! statements of the first chunks as a run would send them, from the same builders ([`ServerSide`],
//! [`chunk_select`], [`InsertBuilder`]), with their ids filled in. Where each chunk ends is found with the
//! one-server copy's own read-only `SELECT id ... LIMIT 1 OFFSET n-1`, at the first chunk's size: a run adapts
//! the size after every chunk, so its later chunks may end elsewhere.

use std::fmt;

use mysql_async::prelude::Queryable;

use super::run::{Recopy, Removal, csmh_error, edxapp_error};
use super::server_side::ServerSide;
use super::sql::{InsertBuilder, OnDuplicate};
use super::streamed::chunk_select;
use super::throttle::Throttles;
use super::{
    MigrateArgs, MigrateReport, check_args, check_extended_table, check_ids_free, chunk_sizer, copied_up_to,
    escaping_of, old_largest_id, old_smallest_id, pass_target, recopy_of, refuse_retired, refuse_while_running,
    statement_bytes,
};
use crate::migrate::checkpoint::{self, Checkpoint, Task};
use crate::migrate::control::{self, Control};
use crate::migrate::schema::COLUMNS;
use crate::migrate::verify::IdRange;
use crate::migrate::{MigrateError, Site};
use crate::topology::{self, Topology};

/// How many chunks a dry run shows the statements of.
const FIRST_CHUNKS: usize = 3;

/// What `csmh-proxy migrate` did: copied, or (with `--dry-run`) planned; its `Display` is what the command prints.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A run's report.
    Copied(MigrateReport),
    /// A dry run's plan (boxed: it is large).
    Planned(Box<Plan>),
    /// A run of `--back`'s report.
    Back(super::back::BackReport),
    /// A dry run of `--back`'s plan.
    BackPlanned(super::back::BackPlan),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Copied(report) => report.fmt(f),
            Outcome::Planned(plan) => plan.fmt(f),
            Outcome::Back(report) => report.fmt(f),
            Outcome::BackPlanned(plan) => plan.fmt(f),
        }
    }
}

/// Refuses to copy when asked for a dry run: a caller of [`super::migrate`] that set `dry_run` wants nothing
/// changed, which only [`plan`] guarantees.
pub fn refuse_dry_run(args: &MigrateArgs) -> Result<(), MigrateError> {
    if !args.dry_run {
        return Ok(());
    }
    Err(MigrateError::Refused("a dry run copies nothing: it is planned by `migrate::copy::plan::plan`".to_owned()))
}

/// What a run of `migrate` would do, as far as can be known without changing anything.
#[derive(Debug, Clone)]
pub struct Plan {
    site: Site,
    args: MigrateArgs,
    /// The checkpoint table's `CREATE TABLE`, when a run would have to create it.
    create_checkpoint: Option<String>,
    start: Start,
    /// The old table's smallest and largest id; `None` when it is empty.
    old_ids: Option<IdRange>,
    /// The first pass copies the ids above this one ...
    after: u64,
    /// ... up to this one, the old table's largest id now.
    target: u64,
    /// Where chunks remove the extended rows the old table no longer has (a re-copy).
    removal: Option<Removal>,
    /// The first chunk's rows.
    rows: u64,
    /// Across two servers: the size at which an INSERT is sent.
    statement_bytes: Option<usize>,
    /// The first chunks.
    chunks: Vec<Chunk>,
    /// The control row (`csmh-proxy pause`, `throttle`), which a run obeys.
    control: Control,
}

/// Where a run would start.
#[derive(Debug, Clone)]
enum Start {
    /// No checkpoint: from the first id.
    First,
    /// After the checkpoint's last id.
    Resume(Checkpoint),
    /// `--from-id`: copies again the rows copied before, from there.
    FromId(Recopy),
}

impl Start {
    /// The start for `args` given the checkpoint of the run before; refused as a run refuses it.
    fn of(args: &MigrateArgs, previous: Option<Checkpoint>) -> Result<Start, MigrateError> {
        match (args.from_id, previous) {
            (Some(from), previous) => Ok(Start::FromId(recopy_of(from, previous.as_ref().and_then(copied_up_to))?)),
            (None, Some(previous)) => Ok(Start::Resume(previous)),
            (None, None) => Ok(Start::First),
        }
    }

    /// Every row up to this id is taken as copied.
    fn after(&self) -> u64 {
        match self {
            Start::First => 0,
            Start::Resume(previous) => previous.last_id.unwrap_or(0),
            Start::FromId(recopy) => recopy.from.saturating_sub(1),
        }
    }

    /// The rows copied before that are copied again.
    fn recopy(&self) -> Option<Recopy> {
        match self {
            Start::First => None,
            Start::Resume(previous) => Recopy::resumed(previous),
            Start::FromId(recopy) => Some(*recopy),
        }
    }
}

/// One chunk of the first pass and the statements that copy it.
#[derive(Debug, Clone)]
struct Chunk {
    /// Its ids.
    ids: IdRange,
    /// Whether it holds a whole chunk's rows (the last chunk of a pass holds the rest).
    full: bool,
    /// What is sent for it, in order.
    lines: Vec<Line>,
}

/// A line of a chunk's statements.
#[derive(Debug, Clone)]
enum Line {
    /// Says where or what (printed as an SQL comment).
    Note(String),
    /// A statement as sent.
    Sql(String),
}

/// Plans `migrate` for `site` with `args`: the same reads and refusals as a run, nothing changed.
pub async fn plan(site: &Site, args: &MigrateArgs) -> Result<Plan, MigrateError> {
    check_args(args)?;
    refuse_retired(site)?;
    let mut servers = site.connect().await?;
    let csmh = &mut servers.csmh;
    check_extended_table(csmh, site).await?;
    refuse_while_running(csmh, site).await?;
    let create_checkpoint =
        (!checkpoint::exists(csmh, site).await?).then(|| checkpoint::create_table_sql(&site.extended));
    let start = Start::of(args, checkpoint::load(csmh, site, Task::Migrate).await?)?;
    let (control, _) = control::load(csmh, site).await?;
    let old_largest = old_largest_id(&mut servers.edxapp, site).await?;
    let target = pass_target(old_largest, start.recopy());
    let smallest = old_smallest_id(&mut servers.edxapp, site).await?;
    let after = start.after();
    let recopy = if target > after {
        check_ids_free(&mut servers.csmh, site, start.recopy(), after, target).await?
    } else {
        None
    };
    let removal = recopy.map(|recopy| Removal { recopy, floor: smallest });
    let rows = chunk_sizer(args).rows();
    let statement_bytes = match site.topology {
        Topology::OneServer => None,
        Topology::TwoServers => Some(statement_bytes(&mut servers.csmh, topology::Server::Csmh).await?),
    };
    let escaping = escaping_of(&mut servers.csmh, topology::Server::Csmh).await?;
    let insert = InsertBuilder::new(&site.extended, escaping, OnDuplicate::Overwrite);
    let statements = ServerSide::forward(site);
    let mut chunks = Vec::new();
    let mut from = after;
    while from < target && chunks.len() < FIRST_CHUNKS {
        // Where the old table is read: the copy's own connection on one server, the reader's across two.
        let (conn, error): (_, fn(&str, mysql_async::Error) -> MigrateError) = match site.topology {
            Topology::OneServer => (&mut servers.csmh, csmh_error),
            Topology::TwoServers => (&mut servers.edxapp, edxapp_error),
        };
        let end: Option<u64> = conn
            .exec_first(&statements.chunk_end, (from, target, rows - 1))
            .await
            .map_err(|source| error("find the end of a chunk", source))?;
        let to = end.unwrap_or(target);
        let chunk = ChunkStatements { site, statements: &statements, insert: &insert, removal, rows, target };
        let lines = match site.topology {
            Topology::OneServer => chunk.server_side(from, to),
            Topology::TwoServers => chunk.streamed(from, to, chunks.len()),
        };
        chunks.push(Chunk { ids: IdRange::new(from + 1, to), full: end.is_some(), lines });
        from = to;
    }
    Ok(Plan {
        site: site.clone(),
        args: args.clone(),
        create_checkpoint,
        start,
        old_ids: smallest.map(|smallest| IdRange::new(smallest, old_largest)),
        after,
        target,
        removal,
        rows,
        statement_bytes,
        chunks,
        control,
    })
}

/// What the statements of a chunk are made of.
struct ChunkStatements<'a> {
    site: &'a Site,
    statements: &'a ServerSide,
    insert: &'a InsertBuilder,
    removal: Option<Removal>,
    rows: u64,
    target: u64,
}

impl ChunkStatements<'_> {
    /// One server: the chunk's transaction on the `csmh` server.
    fn server_side(&self, from: u64, to: u64) -> Vec<Line> {
        let mut lines = vec![
            Line::Sql("BEGIN".to_owned()),
            Line::Sql(bind(&self.statements.chunk_end, &[from, self.target, self.rows - 1])),
        ];
        if let Some((after, up_to)) = self.removal.and_then(|removal| removal.range((from, to))) {
            lines.push(Line::Sql(bind(&self.statements.remove_extra, &[after, up_to])));
        }
        lines.push(Line::Sql(bind(&self.statements.copy, &[from, to])));
        lines.extend(self.commit(to));
        lines
    }

    /// Two servers: the reader's SELECT on the `edxapp` server, then the chunk's transaction on a writer's
    /// connection to the `csmh` server.
    fn streamed(&self, from: u64, to: u64, sequence: usize) -> Vec<Line> {
        let writer = match self.removal {
            Some(_) => "the only writer, in a re-copy".to_owned(),
            None => format!("writer {} of 2", sequence % 2 + 1),
        };
        let mut lines = vec![
            Line::Note("on [backends.edxapp], the reader:".to_owned()),
            Line::Sql(bind(&chunk_select(&self.site.old), &[from, self.target, self.rows])),
            Line::Note(format!("on [backends.csmh], {writer}:")),
            Line::Sql("BEGIN".to_owned()),
            Line::Note("the chunk's rows as they are read, in as many statements as their size needs:".to_owned()),
            Line::Sql(insert_shape(self.insert)),
        ];
        if let Some((after, up_to)) = self.removal.and_then(|removal| removal.range((from, to))) {
            lines.push(Line::Note(format!(
                "then the extended rows of {} that the old table no longer has: their ids read from the extended \
                 table, then DELETE FROM {} WHERE `id` IN (...)",
                IdRange::new(after + 1, up_to),
                self.site.extended.quoted()
            )));
        }
        lines.extend(self.commit(to));
        lines
    }

    /// The checkpoint recording a chunk up to `to`, and the commit of both.
    fn commit(&self, to: u64) -> [Line; 2] {
        [
            Line::Note(format!(
                "the checkpoint, in the same transaction: INSERT INTO {} ... ON DUPLICATE KEY UPDATE ... (task \
                 '{}', state 'running', last_id {to})",
                checkpoint::table_for(&self.site.extended),
                Task::Migrate
            )),
            Line::Sql("COMMIT".to_owned()),
        ]
    }
}

/// `sql` with each `?` replaced by the next of `ids`, as the server sees the prepared statement run with them.
/// The statements name tables by plain identifiers, so a `?` is always a placeholder.
pub(super) fn bind(sql: &str, ids: &[u64]) -> String {
    let mut parts = sql.split('?');
    let mut bound = parts.next().unwrap_or_default().to_owned();
    for (part, id) in parts.zip(ids) {
        bound.push_str(&id.to_string());
        bound.push_str(part);
    }
    bound
}

/// The INSERT a writer sends, with placeholders for the rows' values.
pub(super) fn insert_shape(insert: &InsertBuilder) -> String {
    let row = format!("({})", COLUMNS.map(|column| format!("<{column}>")).join(", "));
    let mut buf = Vec::new();
    insert.start(&mut buf);
    buf.extend_from_slice(format!("{row}, {row}, ...").as_bytes());
    insert.finish(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (site, args) = (&self.site, &self.args);
        writeln!(f, "dry run: nothing has been changed")?;
        match self.old_ids {
            Some(ids) => writeln!(f, "old table {}: {ids}", site.old)?,
            None => writeln!(f, "old table {}: empty", site.old)?,
        }
        let table = checkpoint::table_for(&site.extended);
        match &self.create_checkpoint {
            Some(sql) => writeln!(f, "checkpoint table {table}: missing; a run creates it first:\n{sql};")?,
            None => writeln!(f, "checkpoint table {table}: exists")?,
        }
        match &self.start {
            Start::First => writeln!(f, "start: no checkpoint yet, so from the first id")?,
            Start::Resume(previous) => writeln!(
                f,
                "start: after id {}, the checkpoint's last id (state {}, {} rows copied since {})",
                self.after, previous.state, previous.rows_done, previous.started_at
            )?,
            Start::FromId(recopy) => writeln!(
                f,
                "start: --from-id {}: copies again ids {} to {} (the highest id copied before), then goes on; the \
                 count of rows copied starts again at 0",
                recopy.from, recopy.from, recopy.until
            )?,
        }
        if let Some(Removal { recopy, floor }) = self.removal {
            let removes = match floor {
                Some(floor) => format!(
                    "each chunk of them also removes the extended rows of ids {} to {} that the old table no longer \
                     has (never below its smallest id, {floor})",
                    recopy.from.max(floor),
                    recopy.until
                ),
                None => "nothing is removed: the old table is empty".to_owned(),
            };
            writeln!(f, "re-copy: ids up to {} are copied over their earlier copies; {removes}", recopy.until)?;
        }
        if self.target <= self.after {
            return writeln!(
                f,
                "nothing to copy: the old table has no id above {}; a run would only record the checkpoint as done",
                self.after
            );
        }
        writeln!(
            f,
            "first pass: {}, up to the old table's largest id now (during a re-copy, at least the highest id \
             copied before); then catch-up passes for rows written \
             meanwhile, until one finds nothing new, and the checkpoint records done",
            IdRange::new(self.after + 1, self.target)
        )?;
        match (site.topology, self.statement_bytes) {
            (Topology::TwoServers, Some(bytes)) => writeln!(
                f,
                "how: streamed across two servers: each chunk read on [backends.edxapp], and written on \
                 [backends.csmh] as multi-row INSERT ... ON DUPLICATE KEY UPDATE statements of up to {bytes} bytes \
                 by two writers (one in a re-copy), each chunk in one transaction with its checkpoint, committed in \
                 id order"
            )?,
            _ => writeln!(
                f,
                "how: INSERT ... SELECT on one server: each chunk copied by the server, in one transaction with its \
                 checkpoint"
            )?,
        }
        write!(
            f,
            "chunks: {} rows to start, then sized so that a chunk takes about {} s (--chunk-seconds), at most {} \
             rows (--max-chunk-rows)",
            self.rows, args.chunk_seconds, args.max_chunk_rows
        )?;
        match args.max_rows_per_second {
            Some(max) => writeln!(f, " and about one second's worth of --max-rows-per-second ({max} rows)")?,
            None => writeln!(f)?,
        }
        let throttles = Throttles::from_args(args).with(&self.control.overrides);
        writeln!(
            f,
            "throttles in force: {throttles} (with those of `csmh-proxy throttle`: {})",
            self.control.overrides
        )?;
        if let Some(pause) = &self.control.pause {
            writeln!(f, "a run would wait before its first chunk: {pause} (`csmh-proxy resume` goes on)")?;
        }
        let which = match self.chunks.len() {
            1 => "the only chunk's statements".to_owned(),
            chunks => format!("the first {chunks} chunks' statements"),
        };
        writeln!(
            f,
            "{which} (their ends found now; a run sizes its chunks from the first one's time, so later ones may end \
             elsewhere):"
        )?;
        for (number, chunk) in self.chunks.iter().enumerate() {
            let size = if chunk.full { format!("{} rows", self.rows) } else { "the rest of the pass".to_owned() };
            writeln!(f, "chunk {}: {} ({size})", number + 1, chunk.ids)?;
            for line in &chunk.lines {
                match line {
                    Line::Note(note) => writeln!(f, "-- {note}")?,
                    Line::Sql(sql) => writeln!(f, "{sql};")?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::bind;

    #[test]
    fn ids_fill_the_placeholders_in_order() {
        let sql = "SELECT `id` FROM `a`.`b` WHERE `id` > ? AND `id` <= ? ORDER BY `id` LIMIT 1 OFFSET ?";
        assert_eq!(
            bind(sql, &[0, 20_000, 999]),
            "SELECT `id` FROM `a`.`b` WHERE `id` > 0 AND `id` <= 20000 ORDER BY `id` LIMIT 1 OFFSET 999"
        );
    }
}
