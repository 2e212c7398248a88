//! The two history tables as edx-platform's migrations create them: one definition, used by `init` to create the
//! extended table, by `migrate` to name the columns it copies, and by the sandbox and the tests.
//!
//! The extended table's columns are in edx-platform's physical order, `id` sixth: a statement that gives no
//! column list would put values in the wrong columns, so every statement here names them.

/// The history columns both tables share, between `id` (first in the old table) and `student_module_id`.
const SHARED_COLUMNS_DDL: &str = "`version` varchar(255) NULL,
           `created` datetime(6) NOT NULL,
           `state` longtext NULL,
           `grade` double NULL,
           `max_grade` double NULL";

/// Every column of a history table, in the extended table's physical order (`id` sixth).
pub const COLUMNS: [&str; 7] = ["version", "created", "state", "grade", "max_grade", "id", "student_module_id"];

/// [`COLUMNS`] as a column list in backquotes, for `SELECT` and `INSERT` statements.
pub const COLUMN_LIST: &str = "`version`, `created`, `state`, `grade`, `max_grade`, `id`, `student_module_id`";

/// `CREATE TABLE` of the old table, `courseware_studentmodulehistory`, named `table` (already quoted): signed
/// 32-bit ids, `id` first.
pub fn old_table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (
           `id` int NOT NULL AUTO_INCREMENT PRIMARY KEY,
           {SHARED_COLUMNS_DDL},
           `student_module_id` int NOT NULL,
           KEY (`version`), KEY (`created`), KEY (`student_module_id`))"
    )
}

/// `CREATE TABLE` of the extended table named `table` (already quoted), as edx-platform's migration makes it:
/// unsigned 64-bit ids, `id` sixth, and the next id at `next_id`. InnoDB whatever the server's default engine:
/// a copied chunk and its checkpoint must commit together or not at all.
pub fn extended_table_ddl(table: &str, next_id: u64) -> String {
    format!(
        "CREATE TABLE {table} (
           {SHARED_COLUMNS_DDL},
           `id` bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
           `student_module_id` bigint unsigned NOT NULL,
           KEY (`version`), KEY (`created`), KEY `student_module_idx` (`student_module_id`)
         ) ENGINE=InnoDB AUTO_INCREMENT={next_id}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_list_names_every_column_in_order() {
        let listed: Vec<String> = COLUMNS.iter().map(|column| format!("`{column}`")).collect();
        assert_eq!(COLUMN_LIST, listed.join(", "));
    }

    #[test]
    fn the_extended_table_has_id_sixth_and_its_starting_id() {
        let ddl = extended_table_ddl("`edxapp_csmh`.`h`", 10_224);
        let positions: Vec<usize> = COLUMNS.iter().map(|column| ddl.find(&format!("`{column}` ")).unwrap()).collect();
        assert!(positions.is_sorted(), "{ddl}");
        assert!(ddl.ends_with("ENGINE=InnoDB AUTO_INCREMENT=10224"), "{ddl}");
        assert!(
            old_table_ddl("`edxapp`.`h`").find("`id` int").unwrap()
                < old_table_ddl("`edxapp`.`h`").find("`version`").unwrap()
        );
    }
}
