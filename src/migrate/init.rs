//! `csmh-proxy init`: creates the extended table's database and the table itself on the `csmh` server, with its
//! ids starting `history.id_offset` above the old table's (edx-platform's "Verify the Starting ID Offset", done
//! by the tool), and the checkpoint table. Running it again changes nothing and prints the same check. With
//! `--dry-run` it reads and refuses as a run would, and prints the statements it would run instead of running
//! them: a run and a dry run build them in the same step, so what is printed is what a run sends.
//!
//! The offset is what keeps the two tables' ids apart: copied old rows keep their ids, and every row written to
//! the extended table gets an id above all of them. An existing extended table whose next id is not above the
//! old table's highest id is refused, unless it is still empty, in which case its starting id is simply set
//! (the proxy writes nothing to it until the offset is safe, so an empty table cannot hold a colliding row).

use std::fmt;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::checkpoint;
use super::schema::{COLUMNS, extended_table_ddl};
use super::{ER_NO_SUCH_TABLE, MigrateError, Servers, Site};
use crate::config::Config;
use crate::history::TableName;

/// Options of `csmh-proxy init`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InitArgs {
    /// Read what init needs (the old table's highest id, the extended table's state) and print what it would do,
    /// with the exact statements it would run, changing nothing. Refuses what init would refuse.
    #[arg(long)]
    pub dry_run: bool,
}

/// What `init` found and did (or, in a dry run, would do); its `Display` is what the command prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The old table.
    pub old: TableName,
    /// The extended table.
    pub extended: TableName,
    /// Whether the extended table's database had to be created.
    pub created_database: bool,
    /// What happened to the extended table.
    pub table: TableAction,
    /// Whether the checkpoint table had to be created.
    pub created_checkpoint: bool,
    /// The highest id the old table has given out: its largest id, or its AUTO_INCREMENT less one if that is
    /// higher (rows at the end deleted); 0 when it never held a row.
    pub old_highest_id: u64,
    /// The id the extended table gives its next row (in a dry run: would give, once the statements ran).
    pub next_extended_id: u64,
    /// `history.id_offset`.
    pub configured_offset: u64,
    /// The statements run on the `csmh` server, in order (in a dry run: that would run); empty when nothing had
    /// to change.
    pub statements: Vec<Statement>,
    /// Whether this was a dry run: nothing was changed.
    pub dry_run: bool,
}

impl InitReport {
    /// The starting id offset in force: how far the extended table's next id is above the old table's highest.
    pub fn offset(&self) -> u64 {
        self.next_extended_id - self.old_highest_id
    }

    /// `done` after a run, `would` after a dry run.
    fn said<'a>(&self, done: &'a str, would: &'a str) -> &'a str {
        if self.dry_run { would } else { done }
    }
}

/// What `init` did to the extended table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableAction {
    /// It was missing and has been created.
    Created,
    /// It existed empty with a starting id too low, which has been raised.
    StartRaised,
    /// It existed with a safe starting id and was left as it was.
    Kept,
}

/// A statement `init` runs on the `csmh` server: built once, then run, or printed by a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// What it is for, in the operator's words (also the error's wording should it fail).
    pub what: &'static str,
    /// Its text.
    pub sql: String,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "dry run: nothing has been changed")?;
        }
        if self.created_database {
            writeln!(f, "{} {}", self.said("created database", "would create database"), self.extended.schema())?;
        }
        let action = match self.table {
            TableAction::Created => self.said("created", "would be created"),
            TableAction::StartRaised => {
                self.said("existed empty; starting id raised", "exists empty; starting id would be raised")
            }
            TableAction::Kept => self.said("already exists; left as it is", "already exists; would be left as it is"),
        };
        writeln!(f, "extended table {}: {action}", self.extended)?;
        writeln!(f, "old table {}: highest id {}", self.old, self.old_highest_id)?;
        writeln!(f, "extended table's next id: {}", self.next_extended_id)?;
        writeln!(f, "starting id offset: {} (history.id_offset = {})", self.offset(), self.configured_offset)?;
        if self.offset() < self.configured_offset {
            writeln!(
                f,
                "note: the old table has only {} ids of room left before its new rows could collide with the \
                 extended table's; switch new history to the extended table (ENABLE_CSMH_EXTENDED) soon",
                self.offset()
            )?;
        }
        writeln!(f, "32-bit ids: {}", super::status::Headroom::of(Some(self.next_extended_id)))?;
        let checkpoint = match (self.dry_run, self.created_checkpoint) {
            (false, _) => "ready",
            (true, true) => "would be created",
            (true, false) => "already exists",
        };
        writeln!(f, "checkpoint table {}: {checkpoint}", checkpoint::table_for(&self.extended))?;
        if !self.dry_run {
            return Ok(());
        }
        if self.statements.is_empty() {
            return writeln!(f, "nothing would change: init would run no statement");
        }
        writeln!(f, "statements init would run on [backends.csmh], in order:")?;
        for statement in &self.statements {
            writeln!(f, "-- {}\n{};", statement.what, statement.sql)?;
        }
        Ok(())
    }
}

/// Runs `init` for the site `config` describes, or with `--dry-run` says what it would do.
pub async fn run(config: &Config, args: &InitArgs) -> Result<InitReport, MigrateError> {
    let site = Site::new(config)?;
    if args.dry_run {
        dry_run(&site, config.history.id_offset).await
    } else {
        init(&site, config.history.id_offset).await
    }
}

/// Creates what is missing on the `csmh` server and checks the starting id offset; see the module's doc.
pub async fn init(site: &Site, offset: u64) -> Result<InitReport, MigrateError> {
    let mut servers = site.connect().await?;
    let plan = plan(&mut servers, site, offset).await?;
    for statement in &plan.statements {
        csmh_query(&mut servers.csmh, &statement.sql, statement.what).await?;
    }
    let extended = &site.extended;
    let ids = extended_ids(&mut servers.csmh, extended).await?.ok_or_else(|| {
        MigrateError::Refused(format!("the extended table {extended} disappeared while `init` was running"))
    })?;
    if ids.next <= plan.old_highest_id {
        return Err(unsafe_offset(site, plan.old_highest_id, &ids));
    }
    Ok(InitReport { next_extended_id: ids.next, ..plan })
}

/// What [`init`] would do, changing nothing: the same reads and refusals, and the statements it would run.
pub async fn dry_run(site: &Site, offset: u64) -> Result<InitReport, MigrateError> {
    let mut servers = site.connect().await?;
    let plan = plan(&mut servers, site, offset).await?;
    Ok(InitReport { dry_run: true, ..plan })
}

/// Reads what `init` needs and decides what it has to change, refusing what it must not touch; changes nothing.
/// The report's next id is the one the statements would give the extended table (a run reads it back).
async fn plan(servers: &mut Servers, site: &Site, offset: u64) -> Result<InitReport, MigrateError> {
    let (old, extended) = (&site.old, &site.extended);
    let old_highest_id = old_highest_id(&mut servers.edxapp, old).await?;
    let database = database_statement(&mut servers.csmh, &mut servers.edxapp, site).await?;
    let start = old_highest_id + offset;
    // A database still to be created holds no table yet.
    let existing = if database.is_some() { None } else { extended_ids(&mut servers.csmh, extended).await? };
    if existing.is_some() {
        check_columns(&mut servers.csmh, extended).await?;
    }
    let (table, next_extended_id, table_statement) = match existing {
        None => {
            let sql = extended_table_ddl(&extended.quoted(), start);
            (TableAction::Created, start, Some(Statement { what: "create the extended table", sql }))
        }
        Some(ids) if ids.next > old_highest_id => (TableAction::Kept, ids.next, None),
        Some(ExtendedIds { largest: None, .. }) => {
            let sql = format!("ALTER TABLE {} AUTO_INCREMENT = {start}", extended.quoted());
            (TableAction::StartRaised, start, Some(Statement { what: "set the extended table's starting id", sql }))
        }
        Some(ids) => return Err(unsafe_offset(site, old_highest_id, &ids)),
    };
    let checkpoint = (!checkpoint::exists(&mut servers.csmh, site).await?)
        .then(|| Statement { what: "create the checkpoint table", sql: checkpoint::create_table_sql(extended) });
    Ok(InitReport {
        old: old.clone(),
        extended: extended.clone(),
        created_database: database.is_some(),
        table,
        created_checkpoint: checkpoint.is_some(),
        old_highest_id,
        next_extended_id,
        configured_offset: offset,
        statements: [database, table_statement, checkpoint].into_iter().flatten().collect(),
        dry_run: false,
    })
}

/// The refusal of an extended table whose ids could collide with the old table's.
fn unsafe_offset(site: &Site, old_highest_id: u64, ids: &ExtendedIds) -> MigrateError {
    MigrateError::Refused(format!(
        "unsafe starting id: the extended table {} would give its next row id {}, which is not above the old \
         table {}'s highest id {old_highest_id}, so ids of the two tables could collide; it already holds rows \
         (largest id {}), so `init` does not change it. If every row in it is a copy of an old row, raise its \
         starting id with `ALTER TABLE {} AUTO_INCREMENT = <old highest id + history.id_offset>` and run `init` \
         again",
        site.extended,
        ids.next,
        site.old,
        ids.largest.unwrap_or(0),
        site.extended.quoted(),
    ))
}

/// The old table's highest id given out; refused when the table does not exist.
pub(crate) async fn old_highest_id(conn: &mut Conn, old: &TableName) -> Result<u64, MigrateError> {
    let Some(next) = next_auto_increment(conn, old, "edxapp").await? else {
        return Err(MigrateError::Refused(format!(
            "the old table {old} does not exist on [backends.edxapp]: check `history.old_table`"
        )));
    };
    let largest: Option<u64> = query_first(
        conn,
        "edxapp",
        format!("SELECT MAX(`id`) FROM {}", old.quoted()),
        "read the old table's largest id",
    )
    .await?;
    Ok(largest.unwrap_or(0).max(next.saturating_sub(1)))
}

/// The extended table's ids, when it exists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExtendedIds {
    /// The id its next row gets.
    pub(crate) next: u64,
    /// Its largest id; `None` when it is empty.
    pub(crate) largest: Option<u64>,
}

/// The extended table's next id (the larger of its `AUTO_INCREMENT` and its largest id plus one) and largest id;
/// `None` when it does not exist.
pub(crate) async fn extended_ids(conn: &mut Conn, extended: &TableName) -> Result<Option<ExtendedIds>, MigrateError> {
    let Some(auto_increment) = next_auto_increment(conn, extended, "csmh").await? else { return Ok(None) };
    let sql = format!("SELECT MAX(`id`) FROM {}", extended.quoted());
    let largest: Option<u64> = query_first(conn, "csmh", sql, "read the extended table's largest id").await?;
    let next = auto_increment.max(largest.map_or(0, |id| id + 1));
    Ok(Some(ExtendedIds { next, largest }))
}

/// The table's AUTO_INCREMENT as `SHOW CREATE TABLE` gives it (exact on MySQL 8, whose `information_schema`
/// caches it); 1 when the statement shows none; `None` when the table does not exist.
pub(crate) async fn next_auto_increment(
    conn: &mut Conn,
    table: &TableName,
    backend: &'static str,
) -> Result<Option<u64>, MigrateError> {
    let sql = format!("SHOW CREATE TABLE {}", table.quoted());
    match conn.query_first::<(String, String), _>(sql).await {
        Ok(Some((_, ddl))) => Ok(Some(auto_increment_of(&ddl).unwrap_or(1))),
        Ok(None) => Ok(None),
        Err(mysql_async::Error::Server(error)) if error.code == ER_NO_SUCH_TABLE => Ok(None),
        Err(source) => Err(MigrateError::Query { backend, what: format!("read the definition of {table}"), source }),
    }
}

/// The `AUTO_INCREMENT=n` table option of a `CREATE TABLE` statement.
fn auto_increment_of(ddl: &str) -> Option<u64> {
    let closing = ddl.rfind(')')?;
    let options = &ddl[closing..];
    let value = options.split_once("AUTO_INCREMENT=")?.1;
    let digits = value.find(|c: char| !c.is_ascii_digit()).map_or(value, |end| &value[..end]);
    digits.parse().ok()
}

/// The statement that creates the extended table's database when it is missing, in the character set of the old
/// table so that every value converts without loss; `None` when it exists.
async fn database_statement(
    csmh: &mut Conn,
    edxapp: &mut Conn,
    site: &Site,
) -> Result<Option<Statement>, MigrateError> {
    let schema = site.extended.schema();
    let exists: Option<u8> = exec_first(
        csmh,
        "csmh",
        "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        (schema,),
        "look for the extended table's database",
    )
    .await?;
    if exists.is_some() {
        return Ok(None);
    }
    let collation: Option<Option<String>> = exec_first(
        edxapp,
        "edxapp",
        "SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (site.old.schema(), site.old.table()),
        "read the old table's character set",
    )
    .await?;
    let charset = collation.flatten().and_then(|collation| collation.split('_').next().map(str::to_owned));
    let sql = match charset {
        Some(charset) if charset.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("CREATE DATABASE IF NOT EXISTS `{schema}` CHARACTER SET {charset}")
        }
        _ => format!("CREATE DATABASE IF NOT EXISTS `{schema}`"),
    };
    Ok(Some(Statement { what: "create the extended table's database", sql }))
}

/// Refuses an extended table that lacks one of edx-platform's columns (another table under that name).
async fn check_columns(conn: &mut Conn, extended: &TableName) -> Result<(), MigrateError> {
    let sql = "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
    let found: Vec<String> = conn.exec(sql, (extended.schema(), extended.table())).await.map_err(|source| {
        MigrateError::Query { backend: "csmh", what: "read the extended table's columns".to_owned(), source }
    })?;
    let missing: Vec<&str> =
        COLUMNS.iter().copied().filter(|column| !found.iter().any(|name| name.eq_ignore_ascii_case(column))).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::Refused(format!(
            "the extended table {extended} exists but has no column {}: it is not edx-platform's table",
            missing.join(", ")
        )))
    }
}

async fn csmh_query(conn: &mut Conn, sql: &str, what: &str) -> Result<(), MigrateError> {
    conn.query_drop(sql).await.map_err(|source| MigrateError::Query { backend: "csmh", what: what.to_owned(), source })
}

async fn query_first<T: mysql_async::prelude::FromValue + Send + 'static>(
    conn: &mut Conn,
    backend: &'static str,
    sql: String,
    what: &str,
) -> Result<Option<T>, MigrateError> {
    let row: Option<Option<T>> =
        conn.query_first(sql).await.map_err(|source| MigrateError::Query { backend, what: what.to_owned(), source })?;
    Ok(row.flatten())
}

async fn exec_first<T: mysql_async::prelude::FromRow + Send + 'static>(
    conn: &mut Conn,
    backend: &'static str,
    sql: &str,
    params: impl Into<mysql_async::Params> + Send,
    what: &str,
) -> Result<Option<T>, MigrateError> {
    conn.exec_first(sql, params).await.map_err(|source| MigrateError::Query { backend, what: what.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::auto_increment_of;

    #[test]
    fn the_auto_increment_option_is_read_from_the_table_definition() {
        let ddl = "CREATE TABLE `h` (\n  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n  PRIMARY KEY (`id`)\n) \
                   ENGINE=InnoDB AUTO_INCREMENT=10225 DEFAULT CHARSET=utf8mb4";
        assert_eq!(auto_increment_of(ddl), Some(10_225));
        assert_eq!(auto_increment_of("CREATE TABLE `h` (`id` int) ENGINE=InnoDB"), None);
    }
}
