//! The checkpoint table: where `migrate` records how far it has copied and `verify` its last result, beside the
//! extended table (so a copied chunk and its checkpoint commit in one transaction on that server).

use std::fmt;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{FromRowError, Row};

use super::{ER_BAD_DB, ER_NO_SUCH_TABLE, MigrateError, Site};
use crate::history::TableName;

/// Name of the checkpoint table, in the extended table's database.
pub const TABLE: &str = "csmh_proxy_checkpoint";

/// The command a checkpoint row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `csmh-proxy migrate`.
    Migrate,
    /// `csmh-proxy migrate --back`: the extended table copied back into the old table, on the way back.
    MigrateBack,
    /// `csmh-proxy verify`.
    Verify,
    /// Not a task: the row `csmh-proxy pause`, `resume` and `throttle` write for a running `migrate` to read
    /// ([`super::control`]).
    Control,
}

impl Task {
    /// The task's key in the table.
    pub fn name(self) -> &'static str {
        match self {
            Task::Migrate => "migrate",
            Task::MigrateBack => "migrate-back",
            Task::Verify => "verify",
            Task::Control => "control",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One task's recorded progress or result.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Free-form state of the task: `migrate` writes `running` with every chunk and `done` once a pass finds
    /// nothing new; `verify` writes `passed`, `failed`, ...
    pub state: String,
    /// `migrate`: every old row with an id up to this one is in the extended table. `verify`: the last id checked.
    pub last_id: Option<u64>,
    /// `migrate`: the old table's highest id when the current pass started.
    pub target_id: Option<u64>,
    /// `migrate`: rows copied since the migration started, across resumed runs (reset by `--from-id`).
    /// `verify`: rows checked so far by this run.
    pub rows_done: u64,
    /// A human-readable detail, such as the differing id ranges of a failed verify.
    pub detail: Option<String>,
    /// When the task's run started (server time, `YYYY-MM-DD hh:mm:ss`).
    pub started_at: String,
    /// When the row was last written (server time).
    pub updated_at: String,
}

impl FromRow for Checkpoint {
    fn from_row_opt(row: Row) -> Result<Self, FromRowError> {
        let (state, last_id, target_id, rows_done, detail, started_at, updated_at) = FromRow::from_row_opt(row)?;
        Ok(Checkpoint { state, last_id, target_id, rows_done, detail, started_at, updated_at })
    }
}

/// The checkpoint table's name for `extended` (in the same database).
pub fn table_for(extended: &TableName) -> String {
    format!("`{}`.`{TABLE}`", extended.schema())
}

/// The statement that creates the checkpoint table beside `extended` if it is missing: InnoDB, like the extended
/// table, so that a chunk and the checkpoint recording it commit together. What [`ensure`] runs, and what the
/// dry runs print.
pub fn create_table_sql(extended: &TableName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
           `task` varchar(32) NOT NULL,
           `extended_table` varchar(129) NOT NULL,
           `old_table` varchar(129) NOT NULL,
           `state` varchar(16) NOT NULL,
           `last_id` bigint unsigned NULL,
           `target_id` bigint unsigned NULL,
           `rows_done` bigint unsigned NOT NULL DEFAULT 0,
           `detail` text NULL,
           `started_at` datetime NOT NULL,
           `updated_at` datetime NOT NULL,
           PRIMARY KEY (`task`, `extended_table`)) ENGINE=InnoDB",
        table_for(extended)
    )
}

/// Creates the checkpoint table if it is missing ([`create_table_sql`]).
pub async fn ensure(conn: &mut impl Queryable, site: &Site) -> Result<(), MigrateError> {
    let sql = create_table_sql(&site.extended);
    conn.query_drop(sql).await.map_err(|source| query_error("create the checkpoint table", source))
}

/// Whether the checkpoint table exists, read without changing anything (for the dry runs, which must not create
/// it).
pub async fn exists(conn: &mut impl Queryable, site: &Site) -> Result<bool, MigrateError> {
    let sql = "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
    let found: Option<u8> = conn
        .exec_first(sql, (site.extended.schema(), TABLE))
        .await
        .map_err(|source| query_error("look for the checkpoint table", source))?;
    Ok(found.is_some())
}

/// The recorded checkpoint of `task`, if any (`None` also when the table, or its database, does not exist yet).
pub async fn load(conn: &mut impl Queryable, site: &Site, task: Task) -> Result<Option<Checkpoint>, MigrateError> {
    let sql = format!(
        "SELECT `state`, `last_id`, `target_id`, `rows_done`, `detail`,
                DATE_FORMAT(`started_at`, '%Y-%m-%d %H:%i:%s'), DATE_FORMAT(`updated_at`, '%Y-%m-%d %H:%i:%s')
         FROM {} WHERE `task` = ? AND `extended_table` = ?",
        table_for(&site.extended)
    );
    match conn.exec_first(sql, (task.name(), site.extended.to_string())).await {
        Ok(checkpoint) => Ok(checkpoint),
        Err(mysql_async::Error::Server(error)) if error.code == ER_NO_SUCH_TABLE || error.code == ER_BAD_DB => Ok(None),
        Err(source) => Err(query_error("read the checkpoint", source)),
    }
}

/// Records `checkpoint` for `task`, replacing the previous one. `started_at` is kept when it is empty, and set
/// to now when the task had no row; `updated_at` is always now. Runs on whatever `conn` is, so a caller can put
/// it in the transaction of the chunk it records.
pub async fn save(
    conn: &mut impl Queryable,
    site: &Site,
    task: Task,
    checkpoint: &Checkpoint,
) -> Result<(), MigrateError> {
    let sql = format!(
        "INSERT INTO {} (`task`, `extended_table`, `old_table`, `state`, `last_id`, `target_id`, `rows_done`,
                         `detail`, `started_at`, `updated_at`)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, COALESCE(NULLIF(?, ''), NOW()), NOW())
         ON DUPLICATE KEY UPDATE `old_table` = VALUES(`old_table`), `state` = VALUES(`state`),
           `last_id` = VALUES(`last_id`), `target_id` = VALUES(`target_id`), `rows_done` = VALUES(`rows_done`),
           `detail` = VALUES(`detail`),
           `started_at` = IF(? = '', `started_at`, VALUES(`started_at`)), `updated_at` = NOW()",
        table_for(&site.extended)
    );
    let params: Vec<mysql_async::Value> = vec![
        task.name().into(),
        site.extended.to_string().into(),
        site.old.to_string().into(),
        checkpoint.state.as_str().into(),
        checkpoint.last_id.into(),
        checkpoint.target_id.into(),
        checkpoint.rows_done.into(),
        checkpoint.detail.as_deref().into(),
        checkpoint.started_at.as_str().into(),
        checkpoint.started_at.as_str().into(),
    ];
    conn.exec_drop(sql, params).await.map_err(|source| query_error("write the checkpoint", source))
}

/// Changes the `state` and `detail` of `task`'s checkpoint, if it has one, and nothing else: for a run that is
/// waiting to copy, while its writers may still commit chunks that move `last_id` on.
pub async fn mark(
    conn: &mut impl Queryable,
    site: &Site,
    task: Task,
    state: &str,
    detail: Option<&str>,
) -> Result<(), MigrateError> {
    let sql = format!(
        "UPDATE {} SET `state` = ?, `detail` = ?, `updated_at` = NOW() WHERE `task` = ? AND `extended_table` = ?",
        table_for(&site.extended)
    );
    conn.exec_drop(sql, (state, detail, task.name(), site.extended.to_string()))
        .await
        .map_err(|source| query_error("write the checkpoint", source))
}

/// The `csmh` server's clock, as the checkpoint table records times.
pub async fn server_now(conn: &mut impl Queryable) -> Result<String, MigrateError> {
    let now: Option<String> = conn
        .query_first("SELECT DATE_FORMAT(NOW(), '%Y-%m-%d %H:%i:%s')")
        .await
        .map_err(|source| query_error("read the server's time", source))?;
    Ok(now.unwrap_or_default())
}

fn query_error(what: &str, source: mysql_async::Error) -> MigrateError {
    MigrateError::Query { backend: "csmh", what: what.to_owned(), source }
}
