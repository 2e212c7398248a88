//! One pass of the copy when both tables are on one server: each chunk is an `INSERT ... SELECT` run by the
//! server itself, so no row crosses the network; the chunk and its checkpoint commit in one transaction.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::time::Instant;

use super::run::{Removal, Run, csmh_error};
use super::sql::OnDuplicate;
use super::throttle::Throttle;
use crate::history::TableName;
use crate::migrate::schema::COLUMN_LIST;
use crate::migrate::{MigrateError, Site};

/// The statements of one site, built once (and printed by a dry run, [`super::plan`]), each with `?` for the ids.
#[derive(Debug)]
pub struct ServerSide {
    /// The last id of a chunk, in the source: after, up to, rows less one.
    pub(super) chunk_end: String,
    /// The copy of a chunk from the source into the destination: after, up to.
    pub(super) copy: String,
    /// The removal of the destination's rows that the source no longer has: after, up to.
    pub(super) remove_extra: String,
}

impl ServerSide {
    /// The statements of `migrate` for `site`'s tables: from the old table into the extended one, overwriting.
    pub fn forward(site: &Site) -> ServerSide {
        ServerSide::between(&site.old, &site.extended, OnDuplicate::Overwrite)
    }

    /// The statements that copy from `source` into `destination`, doing `on_duplicate` with rows already there.
    pub fn between(source: &TableName, destination: &TableName, on_duplicate: OnDuplicate) -> ServerSide {
        let (source, destination) = (source.quoted(), destination.quoted());
        let updates = on_duplicate.clause();
        ServerSide {
            chunk_end: format!("SELECT `id` FROM {source} WHERE `id` > ? AND `id` <= ? ORDER BY `id` LIMIT 1 OFFSET ?"),
            copy: format!(
                "INSERT INTO {destination} ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM {source} \
                 WHERE `id` > ? AND `id` <= ? ORDER BY `id`{updates}"
            ),
            remove_extra: format!(
                "DELETE FROM {destination} WHERE `id` > ? AND `id` <= ? \
                 AND NOT EXISTS (SELECT 1 FROM {source} AS `o` WHERE `o`.`id` = {destination}.`id`)"
            ),
        }
    }

    /// Copies every old row with an id above `run.last_id` and up to `run.target_id`, chunk by chunk on `conn`.
    /// With `removal` (a re-copy), each chunk also removes the extended rows of its range that the old table
    /// no longer has, where `removal` allows it.
    pub async fn pass(
        &self,
        conn: &mut Conn,
        run: &mut Run<'_>,
        throttle: &mut Throttle<'_>,
        removal: Option<Removal>,
    ) -> Result<(), MigrateError> {
        while run.last_id < run.target_id {
            throttle.before_chunk(conn, "csmh").await?;
            let rows = throttle.sizer().rows();
            let started = Instant::now();
            let (from, target) = (run.last_id, run.target_id);
            conn.query_drop("BEGIN").await.map_err(|source| csmh_error("start a chunk", source))?;
            let end: Option<u64> = conn
                .exec_first(&self.chunk_end, (from, target, rows - 1))
                .await
                .map_err(|source| csmh_error("find the end of a chunk", source))?;
            let to = end.unwrap_or(target);
            if let Some(range) = removal.and_then(|removal| removal.range((from, to))) {
                conn.exec_drop(&self.remove_extra, range)
                    .await
                    .map_err(|source| csmh_error("remove extended rows the old table no longer has", source))?;
            }
            conn.exec_drop(&self.copy, (from, to)).await.map_err(|source| csmh_error("copy a chunk", source))?;
            let copied = records(&conn.info()).unwrap_or_else(|| conn.affected_rows());
            run.commit_chunk(conn, to, copied).await?;
            throttle.sizer().record(copied, started.elapsed());
            throttle.copied(copied);
        }
        Ok(())
    }
}

/// The `Records: n` of an `INSERT ... SELECT`'s information string: the rows it selected, whether inserted or
/// updated.
pub(super) fn records(info: &str) -> Option<u64> {
    let rest = info.split_once("Records:")?.1.trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::records;

    #[test]
    fn the_record_count_is_read_from_the_information_string() {
        assert_eq!(records("Records: 2500  Duplicates: 3  Warnings: 0"), Some(2500));
        assert_eq!(records(""), None);
    }
}
