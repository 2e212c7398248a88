//! `csmh-proxy migrate --back --dry-run`: what a run would do, changing nothing. It reads what a run reads (the
//! flags' stage, the checkpoints, both tables' ids, the next ids) and refuses what a run refuses, but takes no
//! lock, creates no checkpoint table and writes nothing. It prints where the run would start, how it would copy,
//! and the statements of the first chunk and of the old table's next id, built by the code a run uses.

use std::fmt;
use std::time::Duration;

use super::super::pace::ChunkSizer;
use super::super::plan::{bind, insert_shape};
use super::super::server_side::ServerSide;
use super::super::sql::InsertBuilder;
use super::super::streamed::chunk_select;
use super::super::{
    INITIAL_CHUNK_ROWS, MigrateArgs, check_args, check_extended_table, escaping_of, refuse_while_running,
};
use super::{Mode, Start, check_ids_fit, pass_target, start};
use crate::migrate::checkpoint::{self, Task};
use crate::migrate::init::{extended_ids, next_auto_increment};
use crate::migrate::verify::IdRange;
use crate::migrate::verify::table::{Read, sum_sql};
use crate::migrate::{MigrateError, Site};
use crate::string_literal::Escaping;
use crate::topology::{self, Topology};

/// What a run of `migrate --back` would do, as far as can be known without changing anything.
#[derive(Debug, Clone)]
pub struct BackPlan {
    site: Site,
    mode: Mode,
    /// Whether it would go on with the way back the checkpoint records.
    resumed: bool,
    /// It would go over the ids above this one ...
    after: u64,
    /// ... up to this one, in its first pass.
    target: u64,
    /// Old rows above this id are copies.
    floor: u64,
    /// The first chunk's ids.
    chunk: u64,
    /// The first chunk's statements, in order.
    statements: Vec<String>,
    /// The old table's next id now, and the one a run would raise it to after its last pass (as of now).
    old_next_id: Option<(u64, u64)>,
}

/// Plans `migrate --back` for `site` with `args` (`offset` is `history.id_offset`): the same reads and refusals as
/// a run, nothing changed.
pub async fn plan(site: &Site, args: &MigrateArgs, offset: u64) -> Result<BackPlan, MigrateError> {
    check_args(args)?;
    let mode = Mode::of(site)?;
    let mut servers = site.connect().await?;
    check_extended_table(&mut servers.csmh, site).await?;
    refuse_while_running(&mut servers.csmh, site).await?;
    let previous = checkpoint::load(&mut servers.csmh, site, Task::MigrateBack).await?;
    let Start { resumed, after, removable, .. } = start(&mut servers, site, mode, args.from_id, previous).await?;
    check_ids_fit(&mut servers.csmh, site, mode, offset).await?;
    let target = pass_target(&mut servers, site, mode).await?;
    let chunk =
        ChunkSizer::new(INITIAL_CHUNK_ROWS, args.max_chunk_rows, Duration::from_secs_f64(args.chunk_seconds)).rows();
    let to = target.min(after.saturating_add(chunk));
    let statements = if after < target {
        let escaping = match site.topology {
            Topology::OneServer => Escaping::Backslashes,
            Topology::TwoServers => escaping_of(&mut servers.edxapp, topology::Server::Edxapp).await?,
        };
        chunk_statements(site, mode, escaping, (after, to), mode.removal(removable, (after, to)))
    } else {
        Vec::new()
    };
    let old_next_id = match mode {
        Mode::CatchUp => None,
        Mode::Same | Mode::Merge => {
            let current = next_auto_increment(&mut servers.edxapp, &site.old, "edxapp").await?.unwrap_or(1);
            let next = extended_ids(&mut servers.csmh, &site.extended).await?.map_or(1, |ids| ids.next);
            Some((current, next + offset))
        }
    };
    Ok(BackPlan {
        site: site.clone(),
        mode,
        resumed,
        after,
        target,
        floor: removable.above,
        chunk,
        statements,
        old_next_id,
    })
}

/// The statements of the chunk `(from, to]`, as a run sends them.
fn chunk_statements(
    site: &Site,
    mode: Mode,
    escaping: Escaping,
    (from, to): (u64, u64),
    removal: Option<(u64, u64)>,
) -> Vec<String> {
    let (old, extended) = (&site.old, &site.extended);
    let mut lines = Vec::new();
    if mode.compares() {
        let ids = IdRange::new(from + 1, to);
        lines.push("-- its count and checksum, on both servers at once:".to_owned());
        lines.push(format!("{};", sum_sql(old, ids, Read::Plain)));
        lines.push(format!("{};", sum_sql(extended, ids, Read::Plain)));
        lines.push("-- and only if they differ:".to_owned());
    }
    match site.topology {
        Topology::OneServer => {
            let statements = ServerSide::between(extended, old, mode.on_duplicate());
            lines.push("BEGIN;".to_owned());
            if let Some((after, up_to)) = removal {
                lines.push(format!("{};", bind(&statements.remove_extra, &[after, up_to])));
            }
            lines.push(format!("{};", bind(&statements.copy, &[from, to])));
        }
        Topology::TwoServers => {
            lines.push("-- on [backends.csmh]:".to_owned());
            lines.push(format!("{};", bind(&chunk_select(extended), &[from, to, to - from])));
            lines.push(
                "-- on [backends.edxapp], the rows as they are read, in as many statements as they need:".to_owned(),
            );
            lines.push("BEGIN;".to_owned());
            let insert = InsertBuilder::new(old, escaping, mode.on_duplicate());
            lines.push(format!("{};", insert_shape(&insert)));
            if let Some((after, up_to)) = removal {
                lines.push(format!(
                    "-- then the old rows of {} that the extended table lacks: their ids read from the old table, \
                     then DELETE FROM {} WHERE `id` IN (...)",
                    IdRange::new(after + 1, up_to),
                    old.quoted()
                ));
            }
        }
    }
    lines.push("COMMIT;".to_owned());
    lines.push(format!(
        "-- then, on [backends.csmh], the checkpoint: INSERT INTO {} ... ON DUPLICATE KEY UPDATE ... (task '{}', \
         state 'running', last_id {to})",
        checkpoint::table_for(extended),
        Task::MigrateBack
    ));
    lines
}

impl fmt::Display for BackPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dry run: nothing has been changed")?;
        writeln!(f, "going back, {}", self.mode.describe())?;
        match (self.resumed, self.after) {
            (true, after) => writeln!(f, "start: after id {after}, where the way back's last run stopped")?,
            (false, 0) => writeln!(f, "start: from the first id")?,
            (false, after) => writeln!(f, "start: after id {after} (--from-id)")?,
        }
        if self.mode == Mode::Merge {
            writeln!(
                f,
                "the old table's own rows end at id {}: up to it, an old row the extended table lacks is kept (reads \
                 of both tables show it); above it, such a row is removed",
                self.floor
            )?;
        }
        if self.target <= self.after {
            writeln!(f, "nothing to copy: the extended table has no id above {}", self.after)?;
        } else {
            let compared =
                if self.mode.compares() { ", each compared first and copied only if it differs" } else { "" };
            writeln!(
                f,
                "first pass: {}, in chunks of {} ids at first{compared}; then catch-up passes until one finds \
                 nothing new",
                IdRange::new(self.after + 1, self.target),
                self.chunk
            )?;
            writeln!(
                f,
                "the first chunk, {}:",
                IdRange::new(self.after + 1, self.target.min(self.after + self.chunk))
            )?;
            for line in &self.statements {
                writeln!(f, "{line}")?;
            }
        }
        match self.old_next_id {
            Some((current, wanted)) if wanted > current => {
                writeln!(
                    f,
                    "after the last pass, the old table's next id ({current} now) raised to the extended table's \
                     next id plus history.id_offset ({wanted} as of now), on [backends.edxapp]:"
                )?;
                writeln!(f, "ALTER TABLE {} AUTO_INCREMENT = {wanted};", self.site.old.quoted())
            }
            Some((current, _)) => writeln!(
                f,
                "the old table's next id ({current}) is already above the extended table's next id plus \
                 history.id_offset"
            ),
            None => writeln!(f, "the old table's next id is left as it is: edxapp writes there again"),
        }
    }
}
