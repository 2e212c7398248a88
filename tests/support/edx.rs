//! edxapp as the routing tests drive it: Django's exact statements on the history table, and a test site (edX
//! databases with sample history and a proxy in front) with direct looks at both tables. A site's flags are those
//! of a stage of the migration, `Stage::….flags()`.

use csmh_proxy::history::Flags;
use csmh_proxy::server::ProxyHandle;
use mysql_async::prelude::*;
use mysql_async::{Conn, Error, Params, Row};

use super::EdxDatabases;

/// The old history table's name, as edxapp writes it.
pub const OLD: &str = "courseware_studentmodulehistory";

/// A test's edX databases with the sample history, and a proxy with some flags in front.
pub struct Site {
    /// The databases.
    pub dbs: EdxDatabases,
    /// The proxy.
    pub proxy: ProxyHandle,
    /// The extended table's first id.
    pub first_extended_id: u64,
}

impl Site {
    /// Both tables on one server.
    pub async fn new(flags: Flags) -> Site {
        Site::on(EdxDatabases::fresh().await, flags).await
    }

    /// The extended table on a second server.
    pub async fn two_servers(flags: Flags) -> Site {
        Site::on(EdxDatabases::fresh_two_servers().await, flags).await
    }

    /// Servers of the test's own, the extended table on the second, under the real names `edxapp` and
    /// `edxapp_csmh`: no other test's statements reach them (for the servers' global counters).
    pub async fn private_two_servers(flags: Flags) -> Site {
        Site::on(EdxDatabases::private_two_servers().await, flags).await
    }

    async fn on(dbs: EdxDatabases, flags: Flags) -> Site {
        let first_extended_id = dbs.create_edx_schema(true).await;
        let proxy = dbs.start_proxy(flags).await;
        Site { dbs, proxy, first_extended_id }
    }

    /// edxapp's connection: through the proxy, in the `edxapp` database, with CLIENT_FOUND_ROWS as Django sets it.
    pub async fn edxapp(&self) -> Conn {
        let opts = mysql_async::OptsBuilder::from_opts(self.dbs.proxy_opts(&self.proxy, &super::app()))
            .client_found_rows(true);
        Conn::new(opts).await.expect("edxapp logs in through the proxy")
    }

    /// A root connection to the `edxapp` server.
    pub async fn root(&self) -> Conn {
        super::root_conn(&self.dbs.edxapp).await
    }

    /// A root connection to the `csmh` server.
    pub async fn csmh_root(&self) -> Conn {
        super::root_conn(&self.dbs.csmh).await
    }

    /// Ends the proxy's connections to the `csmh` database, as a restart of that server would; how many there
    /// were (at least one).
    pub async fn kill_csmh_connections(&self) -> usize {
        let mut root = self.csmh_root().await;
        let threads: Vec<u64> = root
            .query(format!("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{}'", self.dbs.csmh_db))
            .await
            .unwrap();
        assert!(!threads.is_empty(), "the session has a csmh connection to lose");
        for thread in &threads {
            root.query_drop(format!("KILL {thread}")).await.unwrap();
        }
        threads.len()
    }

    /// The old table's qualified name.
    pub fn old(&self) -> String {
        format!("`{}`.`{OLD}`", self.dbs.edxapp_db)
    }

    /// The extended table's qualified name.
    pub fn extended(&self) -> String {
        format!("`{}`.`coursewarehistoryextended_studentmodulehistoryextended`", self.dbs.csmh_db)
    }

    /// Ids in the old table, ascending, looked at directly.
    pub async fn old_ids(&self) -> Vec<u64> {
        self.root().await.query(format!("SELECT id FROM {} ORDER BY id", self.old())).await.unwrap()
    }

    /// Ids in the extended table, ascending, looked at directly.
    pub async fn extended_ids(&self) -> Vec<u64> {
        self.csmh_root().await.query(format!("SELECT id FROM {} ORDER BY id", self.extended())).await.unwrap()
    }

    /// The ids of the extended table's rows with `state`, ascending, looked at directly.
    pub async fn extended_ids_with_state(&self, state: &str) -> Vec<u64> {
        let sql = format!("SELECT id FROM {} WHERE state = '{state}' ORDER BY id", self.extended());
        self.csmh_root().await.query(sql).await.unwrap()
    }

    /// Every row of both tables as (id, state, version), the old table's then the extended table's, ascending by
    /// id, looked at directly: what a refused statement must leave as it was.
    pub async fn both_tables(&self) -> [Vec<(u64, String, Option<String>)>; 2] {
        let rows = |table: String| format!("SELECT id, state, version FROM {table} ORDER BY id");
        let old = self.root().await.query(rows(self.old())).await.unwrap();
        [old, self.csmh_root().await.query(rows(self.extended())).await.unwrap()]
    }

    /// Copies the old rows `ids` into the extended table with their ids, as `csmh-proxy migrate` does, marking
    /// each copy by appending ` (copy)` to its state. Works on one server and across two (rows read from the old
    /// table's server, written to the extended table's).
    pub async fn copy_to_extended(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        let rows: Vec<Row> = self
            .root()
            .await
            .query(format!(
                "SELECT version, created, CONCAT(state, ' (copy)'), grade, max_grade, id, student_module_id \
                 FROM {} WHERE id IN ({})",
                self.old(),
                list.join(", ")
            ))
            .await
            .unwrap();
        assert_eq!(rows.len(), ids.len(), "every id to copy is in the old table: {ids:?}");
        let insert = format!(
            "INSERT INTO {} (version, created, state, grade, max_grade, id, student_module_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            self.extended()
        );
        let params = rows.into_iter().map(|row| Params::Positional(row.unwrap()));
        self.csmh_root().await.exec_batch(insert, params).await.unwrap();
    }
}

/// edxapp's history write (`created` is the module's modified time).
pub fn edxapp_insert(module: u64, state: &str) -> String {
    edxapp_insert_at(module, state, "2024-06-01 12:00:00.000000")
}

/// edxapp's history write of a module modified at `created`.
pub fn edxapp_insert_at(module: u64, state: &str, created: &str) -> String {
    format!(
        "INSERT INTO `{OLD}` (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) VALUES \
         (NULL, '{created}', '{state}', 1.0, 2.0, {module})"
    )
}

/// A history INSERT as a client that prepares it would write it, with the state as its one parameter.
pub fn edxapp_prepared_insert() -> String {
    format!(
        "INSERT INTO `{OLD}` (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`) \
         VALUES (NULL, '2024-06-01 12:00:00', ?, 1, 2, 5)"
    )
}

/// edxapp's history read from the user-state client: a literal list of modules, newest first.
pub fn edxapp_read(modules: &str) -> String {
    let cols: Vec<String> = ["id", "version", "created", "state", "grade", "max_grade", "student_module_id"]
        .iter()
        .map(|c| format!("`{OLD}`.`{c}`"))
        .collect();
    format!(
        "SELECT {} FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN ({modules}) ORDER BY `{OLD}`.`id` DESC",
        cols.join(", ")
    )
}

/// edxapp's history read from the staff submission-history view: the modules as a subquery on edxapp's tables.
pub fn edxapp_subquery_read(username: &str, course: &str, problem: &str) -> String {
    format!(
        "SELECT `{OLD}`.`id`, `{OLD}`.`state`, `{OLD}`.`student_module_id` FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN \
         (SELECT U0.`id` FROM `courseware_studentmodule` U0 INNER JOIN `auth_user` U1 ON (U0.`student_id` = U1.`id`) \
         WHERE (U0.`course_id` = '{course}' AND U0.`module_id` = '{problem}' AND U1.`username` = '{username}')) \
         ORDER BY `{OLD}`.`id` DESC"
    )
}

/// edxapp's cascade when a StudentModule is deleted.
pub fn edxapp_delete(modules: &str) -> String {
    format!("DELETE FROM `{OLD}` WHERE `{OLD}`.`student_module_id` IN ({modules})")
}

/// The code and message of the server error `result` must be.
pub fn server_error<T: std::fmt::Debug>(result: Result<T, Error>) -> (u16, String) {
    match result {
        Err(Error::Server(e)) => (e.code, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}
