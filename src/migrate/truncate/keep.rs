//! `truncate-old --keep`: instead of emptying the old table, swap it for an empty copy in one `RENAME TABLE`,
//! keeping the old rows aside as `<old>_retired_<YYYYMMDD>`. The proxy knows the old table by its own name only,
//! so nothing it routes reaches the retired copy, which can be dropped later or put back (docs/migration.md,
//! "Going back").
//!
//! The swap keeps the discipline of the TRUNCATE path: the old table is locked against writes (`LOCK TABLES ...
//! WRITE`) and verified through the locking connection, and nothing reaches it between the verify and the swap.
//! MariaDB refuses `RENAME TABLE` under `LOCK TABLES` (MySQL allows it only from 8.0.13), so the swap is gh-ost's
//! atomic cut-over: a second connection, which created the empty copy beforehand (`CREATE TABLE ... LIKE`) and
//! gave it the old table's next id read under the lock, sends the `RENAME TABLE`, which waits for the lock. Once
//! the server shows it waiting, the first connection unlocks, and the server grants the waiting rename before any
//! other statement waiting for the table (its exclusive lock goes first), so those find the empty copy. A rename
//! not seen waiting in time is killed before the lock is released, and nothing is swapped.

use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::time::Instant;

use super::{TruncateReport, UNLOCK_TABLES, keep_next_id_sql, lock_sql, lock_wait_sql, next_id_to_keep, refusal_for};
use crate::history::TableName;
use crate::migrate::checkpoint::{self, Task};
use crate::migrate::verify::table::{Role, Table};
use crate::migrate::verify::{self, VerifyArgs};
use crate::migrate::{MigrateError, Site};

/// How long the rename may take to show up waiting for the lock before it is killed and nothing is swapped.
const RENAME_SEEN_WITHIN: Duration = Duration::from_secs(10);
/// How often the server is asked whether the rename waits.
const POLL: Duration = Duration::from_millis(20);

/// The two tables the swap names besides the old table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The empty copy that takes the old table's place: `<old>_new`.
    pub fresh: TableName,
    /// Where the old rows go: `<old>_retired_<YYYYMMDD>`, with `_2`, `_3`, ... if that name is taken.
    pub retired: TableName,
}

impl Names {
    /// The names for `old`, read on `conn` (the old table's server): the server's date, and the first retired
    /// name that no table has.
    pub async fn of(conn: &mut Conn, old: &TableName) -> Result<Names, MigrateError> {
        let date: Option<String> = conn
            .query_first("SELECT DATE_FORMAT(CURDATE(), '%Y%m%d')")
            .await
            .map_err(|source| edxapp_error("read the server's date", source))?;
        let base = format!("_retired_{}", date.unwrap_or_default());
        let mut retired = old.with_suffix(&base);
        let mut n = 1;
        while exists(conn, &retired).await? {
            n += 1;
            retired = old.with_suffix(&format!("{base}_{n}"));
        }
        Ok(Names { fresh: old.with_suffix("_new"), retired })
    }
}

/// `CREATE TABLE ... LIKE` of the old table: its empty copy, with the same columns, indexes and options (but not
/// its next id, which is set under the lock).
pub fn create_copy_sql(old: &TableName, fresh: &TableName) -> String {
    format!("CREATE TABLE {} LIKE {}", fresh.quoted(), old.quoted())
}

/// The one statement that swaps the tables: the old one aside, the empty copy in its place.
pub fn rename_sql(old: &TableName, names: &Names) -> String {
    format!("RENAME TABLE {} TO {}, {} TO {}", old.quoted(), names.retired.quoted(), names.fresh.quoted(), old.quoted())
}

/// The statement that puts a retired copy back in the old table's place, sending the table that took its place
/// aside as `<old>_new` (which must be free): the way back from `--keep` (docs/migration.md, "Going back").
pub fn put_back_sql(old: &TableName, retired: &TableName) -> String {
    let fresh = old.with_suffix("_new");
    format!("RENAME TABLE {} TO {}, {} TO {}", old.quoted(), fresh.quoted(), retired.quoted(), old.quoted())
}

/// Swaps the old table for an empty copy once it is verified under a lock; see the module's doc. `edxapp`
/// locks and verifies, a second connection renames.
pub async fn keep(site: &Site, edxapp: &mut Conn, csmh: &mut Conn) -> Result<TruncateReport, MigrateError> {
    let names = Names::of(edxapp, &site.old).await?;
    let mut renamer = site.connect_edxapp().await?;
    run(&mut renamer, &lock_wait_sql(), "limit the wait for the old table's lock").await?;
    clear_leftover(&mut renamer, &names.fresh).await?;
    run(&mut renamer, &create_copy_sql(&site.old, &names.fresh), "create the old table's empty copy").await?;
    let outcome = swap(site, edxapp, csmh, &mut renamer, &names).await;
    if !matches!(outcome, Ok(TruncateReport::Kept { .. })) {
        // Best effort: the copy is empty and nothing refers to it; an error here must not hide the outcome.
        let _ = renamer.query_drop(format!("DROP TABLE IF EXISTS {}", names.fresh.quoted())).await;
    }
    outcome
}

/// Locks the old table, verifies it through the lock, gives the copy its next id, and swaps them.
async fn swap(
    site: &Site,
    edxapp: &mut Conn,
    csmh: &mut Conn,
    renamer: &mut Conn,
    names: &Names,
) -> Result<TruncateReport, MigrateError> {
    let mut old = Table { role: Role::Old, conn: edxapp, name: &site.old };
    old.execute(&lock_wait_sql(), "limit the wait for its lock").await?;
    old.execute(&lock_sql(&site.old), "lock it against writes").await?;
    let verify = match verify::verify(site, old.conn, csmh, &VerifyArgs::default()).await {
        Ok(report) if report.passed() => report,
        outcome => {
            old.execute(UNLOCK_TABLES, "unlock it").await?;
            return Err(refusal_for(outcome?));
        }
    };
    if verify.range.is_none() {
        old.execute(UNLOCK_TABLES, "unlock it").await?;
        return Ok(TruncateReport::NothingToKeep { verify });
    }
    let counter = old.stats().await?.and_then(|stats| stats.next_id);
    let copied = checkpoint::load(csmh, site, Task::Migrate).await?;
    let next_id = next_id_to_keep(counter, verify.range, copied.as_ref());
    if let Err(error) = run(renamer, &keep_next_id_sql(&names.fresh, next_id), "give the copy the next id").await {
        old.execute(UNLOCK_TABLES, "unlock it").await?;
        return Err(error);
    }
    cut_over(old.conn, renamer, &rename_sql(&site.old, names)).await?;
    Ok(TruncateReport::Kept { verify, retired: names.retired.clone(), next_id })
}

/// Sends the rename on `renamer`, waits until the server shows it waiting for the lock `locker` holds, and
/// unlocks, so that the rename goes first. A rename not seen waiting within [`RENAME_SEEN_WITHIN`] is killed
/// before the lock goes, and refused.
async fn cut_over(locker: &mut Conn, renamer: &mut Conn, rename: &str) -> Result<(), MigrateError> {
    let id = renamer.id();
    let renaming = renamer.query_drop(rename);
    tokio::pin!(renaming);
    let deadline = Instant::now() + RENAME_SEEN_WITHIN;
    let mut finished = None;
    let seen = loop {
        tokio::select! {
            result = &mut renaming => {
                finished = Some(result);
                break false;
            }
            () = tokio::time::sleep(POLL) => match waits_for_a_lock(locker, id).await {
                Ok(true) => break true,
                Ok(false) if Instant::now() < deadline => {}
                Ok(false) | Err(_) => break false,
            },
        }
    };
    if !seen && finished.is_none() {
        // Best effort: if the kill fails, the rename still waits and goes first when the lock is released.
        let _ = locker.query_drop(format!("KILL QUERY {id}")).await;
    }
    let unlocked = run(locker, UNLOCK_TABLES, "unlock the old table").await;
    let renamed = match finished {
        Some(result) => result,
        None => renaming.await,
    };
    let outcome = swap_outcome(seen, renamed);
    unlocked?;
    outcome
}

/// What the swap came to, from whether the rename was seen waiting for the lock and how it ended. A rename not
/// seen waiting was killed, and its interruption is the refusal; but if the kill came too late it went through
/// after the unlock, and the old table was swapped all the same (said, with what it means).
fn swap_outcome(seen: bool, renamed: Result<(), mysql_async::Error>) -> Result<(), MigrateError> {
    match renamed {
        Ok(()) if !seen => {
            tracing::warn!(
                "the RENAME TABLE was not seen waiting for the old table's lock, and went through after the unlock: \
                 a write to the old table between the two is in the retired copy, not in the new empty table"
            );
            Ok(())
        }
        Ok(()) => Ok(()),
        Err(mysql_async::Error::Server(error)) if !seen && error.code == ER_QUERY_INTERRUPTED => {
            Err(MigrateError::Refused(format!(
                "the RENAME TABLE was not seen waiting for the old table's lock within {} s, so it was stopped and \
                 the old table was left as it is; run `csmh-proxy truncate-old --yes --keep` again",
                RENAME_SEEN_WITHIN.as_secs()
            )))
        }
        Err(source) => Err(edxapp_error("swap the old table for its empty copy", source)),
    }
}

/// Whether the connection `id` waits for a table's metadata lock.
async fn waits_for_a_lock(conn: &mut Conn, id: u32) -> Result<bool, MigrateError> {
    let sql = "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = ? AND STATE LIKE '%metadata lock%'";
    let found: Option<u8> =
        conn.exec_first(sql, (id,)).await.map_err(|source| edxapp_error("look for the waiting rename", source))?;
    Ok(found.is_some())
}

/// Drops `fresh` if an interrupted run left it behind empty; refuses if it holds rows (it is not this command's).
async fn clear_leftover(conn: &mut Conn, fresh: &TableName) -> Result<(), MigrateError> {
    if !exists(conn, fresh).await? {
        return Ok(());
    }
    let row: Option<u8> = conn
        .query_first(format!("SELECT 1 FROM {} LIMIT 1", fresh.quoted()))
        .await
        .map_err(|source| edxapp_error(&format!("look into {fresh}"), source))?;
    if row.is_some() {
        return Err(MigrateError::Refused(format!(
            "{fresh} exists and holds rows: `truncate-old --keep` creates the old table's empty copy under that \
             name. Find out what it is, rename or drop it, and run again"
        )));
    }
    run(conn, &format!("DROP TABLE {}", fresh.quoted()), "drop the empty copy an interrupted run left").await
}

/// Whether `table` exists on `conn`'s server.
async fn exists(conn: &mut Conn, table: &TableName) -> Result<bool, MigrateError> {
    Ok(Table { role: Role::Old, conn, name: table }.stats().await?.is_some())
}

/// Runs `sql` on `conn` (the old table's server) for its effect.
async fn run(conn: &mut Conn, sql: &str, what: &str) -> Result<(), MigrateError> {
    conn.query_drop(sql).await.map_err(|source| edxapp_error(what, source))
}

/// MariaDB's and MySQL's error for a statement stopped by `KILL QUERY`.
const ER_QUERY_INTERRUPTED: u16 = 1317;

/// A failed statement on the old table's server.
fn edxapp_error(what: &str, source: mysql_async::Error) -> MigrateError {
    MigrateError::Query { backend: "edxapp", what: what.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_not_seen_waiting_is_refused_if_killed_and_reported_done_if_it_went_through() {
        let interrupted = || {
            let message = "Query execution was interrupted".to_owned();
            Err(mysql_async::Error::Server(mysql_async::ServerError { code: 1317, message, state: "70100".into() }))
        };
        // Before, the killed rename was the raw error, and one that went through was said to be left as it was.
        assert!(matches!(swap_outcome(false, interrupted()), Err(MigrateError::Refused(m)) if m.contains("again")));
        assert!(swap_outcome(false, Ok(())).is_ok(), "the old table was swapped");
        assert!(swap_outcome(true, Ok(())).is_ok());
        assert!(matches!(swap_outcome(true, interrupted()), Err(MigrateError::Query { .. })), "not ours: an error");
    }

    #[test]
    fn the_swap_is_one_rename_and_putting_back_is_another() {
        let old: TableName = "edxapp.courseware_studentmodulehistory".parse().unwrap();
        let names = Names {
            fresh: old.with_suffix("_new"),
            retired: "edxapp.courseware_studentmodulehistory_retired_20260101".parse().unwrap(),
        };
        assert_eq!(
            rename_sql(&old, &names),
            "RENAME TABLE `edxapp`.`courseware_studentmodulehistory` TO \
             `edxapp`.`courseware_studentmodulehistory_retired_20260101`, \
             `edxapp`.`courseware_studentmodulehistory_new` TO `edxapp`.`courseware_studentmodulehistory`"
        );
        assert_eq!(
            put_back_sql(&old, &names.retired),
            "RENAME TABLE `edxapp`.`courseware_studentmodulehistory` TO `edxapp`.`courseware_studentmodulehistory_new`, \
             `edxapp`.`courseware_studentmodulehistory_retired_20260101` TO `edxapp`.`courseware_studentmodulehistory`"
        );
    }
}
