//! The edX tables: `auth_user`, `courseware_studentmodule` and the old history table in `edxapp`, the extended
//! history table in `edxapp_csmh` starting above the old ids, and a small sample course history.

use std::fmt::Write as _;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use super::sql::quote_ident;
use crate::migrate::schema;

/// The database of edxapp's own tables and the old history table.
pub const EDXAPP_DB: &str = "edxapp";
/// The database of the extended history table.
pub const CSMH_DB: &str = "edxapp_csmh";
/// The history table edxapp writes.
pub const OLD_TABLE: &str = "courseware_studentmodulehistory";
/// The extended history table (edx-platform's released name).
pub const EXTENDED_TABLE: &str = "coursewarehistoryextended_studentmodulehistoryextended";
/// edx-platform's `STUDENTMODULEHISTORYEXTENDED_OFFSET`: the extended table starts this far above the old ids.
pub const STUDENTMODULEHISTORYEXTENDED_OFFSET: u64 = crate::config::DEFAULT_ID_OFFSET;

/// One database of the edX schema: the server (with credentials that may create it) and its name.
#[derive(Debug, Clone)]
pub struct EdxDatabase {
    /// Administrative connection options for the server.
    pub server: Opts,
    /// The database's name.
    pub name: String,
}

/// Where to create the edX tables, and whether to fill in sample history.
#[derive(Debug, Clone)]
pub struct EdxSchema {
    /// `courseware_studentmodule`, `auth_user` and the old history table.
    pub edxapp: EdxDatabase,
    /// The extended history table; `None` for a site that never made it (Tutor).
    pub csmh: Option<EdxDatabase>,
    /// Whether to insert [`insert_sample_history`]'s rows before the extended table takes its starting id.
    pub sample_history: bool,
    /// Rows of [`generate_history`] to add after the sample, before the extended table takes its starting id.
    pub generated_rows: u64,
}

impl EdxSchema {
    /// Both databases under their real names on one server, with sample history.
    pub fn one_server(server: Opts) -> EdxSchema {
        EdxSchema::two_servers(server.clone(), server)
    }

    /// `edxapp` on one server and `edxapp_csmh` on another, under their real names, with sample history.
    pub fn two_servers(edxapp: Opts, csmh: Opts) -> EdxSchema {
        EdxSchema {
            edxapp: EdxDatabase { server: edxapp, name: EDXAPP_DB.to_owned() },
            csmh: Some(EdxDatabase { server: csmh, name: CSMH_DB.to_owned() }),
            sample_history: true,
            generated_rows: 0,
        }
    }
}

/// Creates the databases and tables of `schema` as edx-platform's migrations do, the extended table last with
/// its AUTO_INCREMENT at `MAX(old id) + STUDENTMODULEHISTORYEXTENDED_OFFSET`. Returns that starting id (`None`
/// without a `csmh` database).
pub async fn create_edx_schema(schema: &EdxSchema) -> mysql_async::Result<Option<u64>> {
    let mut edxapp = Conn::new(schema.edxapp.server.clone()).await?;
    create_edxapp_tables(&mut edxapp, &schema.edxapp.name).await?;
    if schema.sample_history {
        insert_sample_history(&mut edxapp, &schema.edxapp.name).await?;
    }
    generate_history(&mut edxapp, &schema.edxapp.name, schema.generated_rows).await?;
    let start = match &schema.csmh {
        Some(csmh) => {
            let start = old_history_max_id(&mut edxapp, &schema.edxapp.name).await?.unwrap_or(0)
                + STUDENTMODULEHISTORYEXTENDED_OFFSET;
            let mut conn = Conn::new(csmh.server.clone()).await?;
            create_extended_table(&mut conn, &csmh.name, start).await?;
            conn.disconnect().await?;
            Some(start)
        }
        None => None,
    };
    edxapp.disconnect().await?;
    Ok(start)
}

/// Creates `database` with `auth_user` (id and username only), `courseware_studentmodule` and the old history
/// table, columns in edx-platform's order.
pub async fn create_edxapp_tables(conn: &mut Conn, database: &str) -> mysql_async::Result<()> {
    let db = quote_ident(database);
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    conn.query_drop(format!(
        "CREATE TABLE {db}.`auth_user` (
           `id` int NOT NULL AUTO_INCREMENT PRIMARY KEY,
           `username` varchar(150) NOT NULL UNIQUE)"
    ))
    .await?;
    conn.query_drop(format!(
        "CREATE TABLE {db}.`courseware_studentmodule` (
           `id` bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
           `module_type` varchar(32) NOT NULL,
           `module_id` varchar(255) NOT NULL,
           `student_id` int NOT NULL,
           `state` longtext NULL,
           `grade` double NULL,
           `max_grade` double NULL,
           `done` varchar(8) NOT NULL,
           `created` datetime(6) NOT NULL,
           `modified` datetime(6) NOT NULL,
           `course_id` varchar(255) NOT NULL,
           UNIQUE KEY (`student_id`, `module_id`, `course_id`),
           KEY (`module_type`), KEY (`course_id`), KEY (`grade`), KEY (`created`), KEY (`modified`),
           KEY `courseware_stats` (`module_id`, `grade`, `student_id`))"
    ))
    .await?;
    conn.query_drop(schema::old_table_ddl(&format!("{db}.{}", quote_ident(OLD_TABLE)))).await
}

/// Creates `database` and the extended history table, `id` 6th as edx-platform's migration made it, with its
/// next id at `next_id`.
pub async fn create_extended_table(conn: &mut Conn, database: &str, next_id: u64) -> mysql_async::Result<()> {
    let db = quote_ident(database);
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    conn.query_drop(schema::extended_table_ddl(&format!("{db}.{}", quote_ident(EXTENDED_TABLE)), next_id)).await
}

/// `MAX(id)` of the old history table in `database`; `None` when it is empty.
pub async fn old_history_max_id(conn: &mut Conn, database: &str) -> mysql_async::Result<Option<u64>> {
    let sql = format!("SELECT MAX(`id`) FROM {}.{}", quote_ident(database), quote_ident(OLD_TABLE));
    Ok(conn.query_first::<Option<u64>, _>(sql).await?.flatten())
}

/// Adds to the old history table of `database` `rows` edX-shaped rows generated by the server itself
/// (MariaDB's Sequence engine), above its largest id, for the sandbox, tests and benchmarks of the migration: ids
/// with gaps and, past three quarters of the rows, a jump of a million; NULLs in every nullable column;
/// microseconds; doubles without a short decimal form; states of up to 520 bytes with quotes, backslashes,
/// control characters and non-ASCII text.
pub async fn generate_history(conn: &mut Conn, database: &str, rows: u64) -> mysql_async::Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let above = old_history_max_id(conn, database).await?.unwrap_or(0);
    let db = quote_ident(database);
    let table = quote_ident(OLD_TABLE);
    conn.query_drop(format!(
        "INSERT INTO {db}.{table} (`id`, `version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`)
         SELECT {above} + seq * 3 + seq % 3 + IF(seq > {rows} * 3 DIV 4, 1000000, 0),
                IF(seq % 10 = 0, NULL, CONCAT('v', seq % 7)),
                TIMESTAMPADD(MICROSECOND, seq * 1234567, '2024-01-01 00:00:00.000000'),
                CASE seq % 5
                  WHEN 0 THEN NULL
                  WHEN 1 THEN CONCAT('{{\"attempts\": ', seq % 4, ', \"student_answers\": {{\"2_1\": \"it''s \\\\\"x\\\\\"\"}}}}')
                  WHEN 2 THEN CONCAT('line\\nnext\\r\\ttab \\\\ back', CHAR(0), CHAR(26), ' é€ ', seq)
                  ELSE REPEAT('{{\"seed\": 1}}', 1 + seq % 40)
                END,
                IF(seq % 4 = 0, NULL, seq / 7e0),
                IF(seq % 3 = 0, NULL, 1e0 + seq % 5),
                seq % 50000 + 1
         FROM {db}.`seq_1_to_{rows}`"
    ))
    .await
}

/// The learners of the sample history: `auth_user` ids and usernames.
pub const SAMPLE_LEARNERS: [(u32, &str); 3] = [(1, "alice"), (2, "bob"), (3, "carol")];
/// The course of the sample history.
pub const SAMPLE_COURSE: &str = "course-v1:edX+DemoX+Demo_Course";
/// The problems of the sample history (usage keys).
pub const SAMPLE_PROBLEMS: [&str; 2] = [
    "block-v1:edX+DemoX+Demo_Course+type@problem+block@d1b84dcd39b0423d9e288f27f0f7f242",
    "block-v1:edX+DemoX+Demo_Course+type@problem+block@75f9562c77bc4858b61f907bb810d974",
];
/// History rows per learner and problem: the first view, then each submission.
pub const SAMPLE_ATTEMPTS: u32 = 3;

/// How much sample data [`insert_sample_history`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleHistory {
    /// Rows in `courseware_studentmodule`.
    pub modules: u64,
    /// Rows in the old history table.
    pub history_rows: u64,
}

/// Inserts a small, realistic course history into `database`'s tables: a few learners, each with a
/// `courseware_studentmodule` row per problem and several history rows per module, oldest first, as edxapp
/// would have written them.
pub async fn insert_sample_history(conn: &mut Conn, database: &str) -> mysql_async::Result<SampleHistory> {
    let db = quote_ident(database);
    conn.exec_batch(format!("INSERT INTO {db}.`auth_user` (`id`, `username`) VALUES (?, ?)"), SAMPLE_LEARNERS).await?;
    let modules = sample_modules();
    conn.exec_batch(
        format!(
            "INSERT INTO {db}.`courseware_studentmodule` (`id`, `module_type`, `module_id`, `student_id`, `state`,
               `grade`, `max_grade`, `done`, `created`, `modified`, `course_id`)
             VALUES (?, 'problem', ?, ?, ?, ?, 1, 'na', ?, ?, ?)"
        ),
        modules.iter().map(|m| {
            let last = SAMPLE_ATTEMPTS - 1;
            (m.id, m.problem, m.learner, sample_state(last), sample_grade(last), m.time(0), m.time(last), SAMPLE_COURSE)
        }),
    )
    .await?;
    let history: Vec<_> = (0..SAMPLE_ATTEMPTS)
        .flat_map(|attempt| {
            modules.iter().map(move |m| (m.time(attempt), sample_state(attempt), sample_grade(attempt), m.id))
        })
        .collect();
    conn.exec_batch(
        format!(
            "INSERT INTO {db}.{} (`version`, `created`, `state`, `grade`, `max_grade`, `student_module_id`)
             VALUES (NULL, ?, ?, ?, 1, ?)",
            quote_ident(OLD_TABLE)
        ),
        &history,
    )
    .await?;
    Ok(SampleHistory { modules: modules.len() as u64, history_rows: history.len() as u64 })
}

/// One learner's state of one problem in the sample.
struct SampleModule {
    id: u64,
    learner: u32,
    problem: &'static str,
}

impl SampleModule {
    /// When attempt `attempt` was saved: a day per attempt, a minute per module.
    fn time(&self, attempt: u32) -> String {
        format!("2024-03-{:02} 10:{:02}:07.{:06}", 4 + attempt, self.id, 120_000 + self.id * 1_111)
    }
}

fn sample_modules() -> Vec<SampleModule> {
    let pairs =
        SAMPLE_LEARNERS.iter().flat_map(|&(learner, _)| SAMPLE_PROBLEMS.iter().map(move |&problem| (learner, problem)));
    pairs.zip(1..).map(|((learner, problem), id)| SampleModule { id, learner, problem }).collect()
}

/// The problem state JSON an XBlock saves after `attempt` submissions.
fn sample_state(attempt: u32) -> String {
    let mut state = format!("{{\"seed\": 1, \"attempts\": {attempt}");
    if attempt > 0 {
        let correct = if attempt == SAMPLE_ATTEMPTS - 1 { "correct" } else { "incorrect" };
        let _ = write!(
            state,
            ", \"done\": true, \"student_answers\": {{\"2_1\": \"choice_{attempt}\"}}, \
             \"correct_map\": {{\"2_1\": {{\"correctness\": \"{correct}\", \"npoints\": null}}}}"
        );
    }
    state.push('}');
    state
}

/// The grade after `attempt` submissions: none before the first, full marks on the last.
fn sample_grade(attempt: u32) -> Option<f64> {
    (attempt > 0).then_some(if attempt == SAMPLE_ATTEMPTS - 1 { 1.0 } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_history_is_oldest_first_and_graded_on_submission() {
        let modules = sample_modules();
        assert_eq!(modules.len(), SAMPLE_LEARNERS.len() * SAMPLE_PROBLEMS.len());
        assert!(modules[0].time(0) < modules[1].time(0) && modules[5].time(0) < modules[0].time(1));
        assert_eq!((sample_grade(0), sample_grade(1), sample_grade(2)), (None, Some(0.0), Some(1.0)));
    }
}
