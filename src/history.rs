//! The edX knowledge in one place: the names of the two student-module history tables, edx-platform's three
//! migration flags ([`Flags`], which `proxy.toml`'s `[flags]` holds), and the routing table (docs/routing.md,
//! "From flags to a route"), which says where each kind of statement on the old table goes for a given set of
//! flags.
//!
//! [`routing_table`] is the only place that reads the three flags together; everything downstream works with
//! the [`RoutingTable`] it returns, so a refused flag combination can never reach the data path.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// MySQL's limit on the length of a schema or table name.
const MAX_IDENTIFIER_LEN: usize = 64;

/// A schema-qualified table name made of plain identifiers, such as `edxapp.courseware_studentmodulehistory`.
///
/// Plain identifiers (ASCII letters, digits, underscores) need no quoting and contain nothing to escape, so a
/// `TableName` can be spliced into SQL text as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: String,
    table: String,
}

impl TableName {
    /// The database (schema) part, e.g. `edxapp`.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The table part, e.g. `courseware_studentmodulehistory`.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The name in backquotes, `` `schema`.`table` ``, ready to splice into a statement.
    pub fn quoted(&self) -> String {
        format!("`{}`.`{}`", self.schema, self.table)
    }

    /// Whether `other` may be the same table on a server: MySQL compares names case-insensitively on many
    /// setups (`lower_case_table_names`), so names differing only in case are treated as the same table.
    pub fn same_table_as(&self, other: &TableName) -> bool {
        self.schema.eq_ignore_ascii_case(&other.schema) && self.table.eq_ignore_ascii_case(&other.table)
    }

    /// A table beside this one (same schema) named after it with `suffix` (letters, digits and underscores)
    /// appended, such as the copy `truncate-old --keep` retires it to. The name is shortened first where the
    /// whole would pass MySQL's 64 characters, so the suffix is always kept.
    pub fn with_suffix(&self, suffix: &str) -> TableName {
        debug_assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{suffix}");
        let keep = MAX_IDENTIFIER_LEN.saturating_sub(suffix.len()).min(self.table.len());
        TableName { schema: self.schema.clone(), table: format!("{}{suffix}", &self.table[..keep]) }
    }
}

impl FromStr for TableName {
    type Err = TableNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = name.split('.').collect();
        let [schema, table] = parts.as_slice() else {
            return Err(if parts.len() == 1 {
                TableNameError::NotQualified { name: name.to_owned() }
            } else {
                TableNameError::TooManyParts { name: name.to_owned() }
            });
        };
        for identifier in [schema, table] {
            if !is_plain_identifier(identifier) {
                return Err(TableNameError::NotPlainIdentifier {
                    name: name.to_owned(),
                    identifier: (*identifier).to_owned(),
                });
            }
        }
        Ok(TableName { schema: (*schema).to_owned(), table: (*table).to_owned() })
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Whether `identifier` is one that MySQL accepts unquoted and that needs no escaping: ASCII letters, digits and
/// underscores, not digits only (that would read as a number), at most 64 characters.
fn is_plain_identifier(identifier: &str) -> bool {
    !identifier.is_empty()
        && identifier.len() <= MAX_IDENTIFIER_LEN
        && identifier.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !identifier.bytes().all(|b| b.is_ascii_digit())
}

/// Why a string is not a usable [`TableName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableNameError {
    /// No schema: the proxy must know which database each table lives in, since the two may differ.
    #[error("`{name}` has no schema: write it as `schema.table`, e.g. `edxapp.courseware_studentmodulehistory`")]
    NotQualified {
        /// The name as written.
        name: String,
    },
    /// More than one dot: only `schema.table` is meaningful to MySQL.
    #[error("`{name}` has more than one dot: write it as `schema.table`")]
    TooManyParts {
        /// The name as written.
        name: String,
    },
    /// A part that would need quoting (or is empty), which the proxy does not accept so that names can be
    /// spliced into statements safely.
    #[error(
        "`{identifier}` in `{name}` is not a plain identifier: use only ASCII letters, digits and underscores \
         (not digits only, at most 64 characters)"
    )]
    NotPlainIdentifier {
        /// The name as written.
        name: String,
        /// The offending part.
        identifier: String,
    },
}

/// The history tables' columns in the old table's order, which is the order clients see: the extended table has
/// the same columns with `id` sixth, so every statement the proxy writes names them explicitly.
pub const COLUMNS: [&str; 7] = ["id", "version", "created", "state", "grade", "max_grade", "student_module_id"];

/// Columns whose type differs between the tables (`INT` in the old one, `BIGINT UNSIGNED` in the extended one).
/// Read from the old table next to the extended one they are cast, or MariaDB would type their union as DECIMAL.
pub const WIDENED_COLUMNS: [&str; 2] = ["id", "student_module_id"];

/// What a statement naming the old history table does to it, as far as routing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// `INSERT` (and `REPLACE`): writes new history rows.
    Insert,
    /// `SELECT`: reads history rows.
    Select,
    /// `UPDATE` and `DELETE`: change or remove existing rows, wherever copies of them are.
    UpdateDelete,
    /// Anything else naming the table (DDL, `TRUNCATE`, `LOAD DATA`, ...), which the routing does not translate.
    Other,
}

impl StatementKind {
    /// Every kind, in the order of the routing table's columns in docs/routing.md.
    pub const ALL: [StatementKind; 4] =
        [StatementKind::Insert, StatementKind::Select, StatementKind::UpdateDelete, StatementKind::Other];

    /// How an operator names this kind of statement.
    pub fn label(self) -> &'static str {
        match self {
            StatementKind::Insert => "INSERT",
            StatementKind::Select => "SELECT",
            StatementKind::UpdateDelete => "UPDATE, DELETE",
            StatementKind::Other => "anything else",
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where a statement on the old history table goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The old table on the `edxapp` backend: the statement is forwarded unchanged (passthrough).
    OldTable,
    /// The extended table on the `csmh` backend: the statement is rewritten to name it instead.
    ExtendedTable,
    /// Both tables (fan-out): rows read are merged with each history row once, affected-row counts are summed.
    BothTables,
    /// Neither: the statement is refused with error 1142, because the old table is retired.
    Blocked,
}

impl Target {
    /// A short description for the routing table an operator reads.
    pub fn describe(self) -> &'static str {
        match self {
            Target::OldTable => "old table (passthrough)",
            Target::ExtendedTable => "rewrite to the extended table",
            Target::BothTables => "fan out to both tables, merged",
            Target::Blocked => "blocked (error 1142)",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// `[flags]`: edx-platform's feature flags, under their edx-platform names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    /// New history rows go to the extended table; reads include it.
    #[serde(rename = "ENABLE_CSMH_EXTENDED", default)]
    pub enable_csmh_extended: bool,
    /// Reads include the old table.
    #[serde(rename = "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES", default)]
    pub enable_reading_from_multiple_history_tables: bool,
    /// The old table is retired: nothing reaches it any more.
    #[serde(rename = "READ_ONLY_FROM_CSMHE", default)]
    pub read_only_from_csmhe: bool,
}

impl Flags {
    /// Whether `flag` is on.
    pub fn is_on(&self, flag: Flag) -> bool {
        match flag {
            Flag::EnableCsmhExtended => self.enable_csmh_extended,
            Flag::EnableReadingFromMultipleHistoryTables => self.enable_reading_from_multiple_history_tables,
            Flag::ReadOnlyFromCsmhe => self.read_only_from_csmhe,
        }
    }
}

/// One of the `[flags]`, for naming it in messages and listing them without repeating the three fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `ENABLE_CSMH_EXTENDED`: new history goes to the extended table.
    EnableCsmhExtended,
    /// `ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES`: reads include the old table.
    EnableReadingFromMultipleHistoryTables,
    /// `READ_ONLY_FROM_CSMHE`: the old table is retired.
    ReadOnlyFromCsmhe,
}

impl Flag {
    /// Every flag, in the order of the routing table's columns in docs/routing.md.
    pub const ALL: [Flag; 3] =
        [Flag::EnableCsmhExtended, Flag::EnableReadingFromMultipleHistoryTables, Flag::ReadOnlyFromCsmhe];

    /// The flag's key in `[flags]`, which is its edx-platform name.
    pub fn name(self) -> &'static str {
        match self {
            Flag::EnableCsmhExtended => "ENABLE_CSMH_EXTENDED",
            Flag::EnableReadingFromMultipleHistoryTables => "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES",
            Flag::ReadOnlyFromCsmhe => "READ_ONLY_FROM_CSMHE",
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which row of the routing table (docs/routing.md, "From flags to a route") applies: where the site is in the
/// migration to the extended table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `ENABLE_CSMH_EXTENDED` off: edxapp writes and reads only the old table, and the proxy stays out of the way.
    OldTableOnly,
    /// `ENABLE_CSMH_EXTENDED` and `ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES` on: new history goes to the
    /// extended table, reads cover both while old rows are still being copied.
    ExtendedTableReadingBoth,
    /// `ENABLE_CSMH_EXTENDED` on, `ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES` off: every old row has been
    /// copied, so reads use the extended table alone; UPDATE and DELETE still reach the old table's copies.
    ExtendedTableOnlyReads,
    /// `READ_ONLY_FROM_CSMHE` on: the old table is retired and nothing reaches it any more.
    OldTableRetired,
}

impl Stage {
    /// Every stage, in the order a migration goes through them.
    pub const ALL: [Stage; 4] =
        [Stage::OldTableOnly, Stage::ExtendedTableReadingBoth, Stage::ExtendedTableOnlyReads, Stage::OldTableRetired];

    /// A one-line name of the stage, with the flags that select it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::OldTableOnly => "old table only (ENABLE_CSMH_EXTENDED off): everything passes through",
            Stage::ExtendedTableReadingBoth => {
                "extended table, reading both (ENABLE_CSMH_EXTENDED and \
                 ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES on)"
            }
            Stage::ExtendedTableOnlyReads => {
                "extended table only for reads (ENABLE_CSMH_EXTENDED on, \
                 ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES off)"
            }
            Stage::OldTableRetired => "old table retired (READ_ONLY_FROM_CSMHE on)",
        }
    }

    /// The canonical flags of this stage: the ones it needs on, every other off, so that a test or an example
    /// names a stage instead of spelling out three booleans. [`routing_table`] gives this stage for them.
    pub fn flags(self) -> Flags {
        let off = Flags::default();
        match self {
            Stage::OldTableOnly => off,
            Stage::ExtendedTableReadingBoth => {
                Flags { enable_csmh_extended: true, enable_reading_from_multiple_history_tables: true, ..off }
            }
            Stage::ExtendedTableOnlyReads => Flags { enable_csmh_extended: true, ..off },
            Stage::OldTableRetired => Flags { enable_csmh_extended: true, read_only_from_csmhe: true, ..off },
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where each kind of statement on the old history table goes, for one set of flags.
///
/// Only [`routing_table`] builds one, so every `RoutingTable` is a row of the table in docs/routing.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoutingTable {
    stage: Stage,
    insert: Target,
    select: Target,
    update_delete: Target,
    other: Target,
}

impl RoutingTable {
    /// The stage whose row this is.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Where a statement of `kind` goes.
    pub fn route(&self, kind: StatementKind) -> Target {
        match kind {
            StatementKind::Insert => self.insert,
            StatementKind::Select => self.select,
            StatementKind::UpdateDelete => self.update_delete,
            StatementKind::Other => self.other,
        }
    }
}

/// One line per statement kind, e.g. `SELECT          -> fan out to both tables, merged`.
impl fmt::Display for RoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = StatementKind::ALL.iter().map(|kind| kind.label().len()).max().unwrap_or(0);
        for kind in StatementKind::ALL {
            writeln!(f, "{:width$}  -> {}", kind.label(), self.route(kind))?;
        }
        Ok(())
    }
}

/// A flag combination the proxy refuses to run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefusedFlags {
    /// `READ_ONLY_FROM_CSMHE` on with `ENABLE_CSMH_EXTENDED` off: the old table would be retired while edxapp's
    /// history is still written to it, so new history would have nowhere to go.
    #[error(
        "READ_ONLY_FROM_CSMHE = true needs ENABLE_CSMH_EXTENDED = true: it retires the old history table, but with \
         ENABLE_CSMH_EXTENDED = false new history is still written to the old table, so it cannot be retired; \
         turn ENABLE_CSMH_EXTENDED on, or READ_ONLY_FROM_CSMHE off"
    )]
    RetiredWhileStillWritten,
}

impl RefusedFlags {
    /// The flag whose value makes the combination impossible, for pointing at it in `proxy.toml`.
    pub fn flag(self) -> Flag {
        match self {
            RefusedFlags::RetiredWhileStillWritten => Flag::ReadOnlyFromCsmhe,
        }
    }
}

/// The routing table (docs/routing.md, "From flags to a route"): from edx-platform's flags to where each kind of
/// statement goes, or the reason the combination is refused.
pub fn routing_table(flags: Flags) -> Result<RoutingTable, RefusedFlags> {
    use Target::{Blocked, BothTables, ExtendedTable, OldTable};
    // Each row lists the targets of INSERT, SELECT, UPDATE/DELETE and anything else, in the documented columns' order.
    let row =
        |stage, insert, select, update_delete, other| Ok(RoutingTable { stage, insert, select, update_delete, other });
    match (flags.enable_csmh_extended, flags.enable_reading_from_multiple_history_tables, flags.read_only_from_csmhe) {
        (false, _, false) => row(Stage::OldTableOnly, OldTable, OldTable, OldTable, OldTable),
        (true, true, false) => row(Stage::ExtendedTableReadingBoth, ExtendedTable, BothTables, BothTables, OldTable),
        (true, false, false) => row(Stage::ExtendedTableOnlyReads, ExtendedTable, ExtendedTable, BothTables, OldTable),
        (true, _, true) => row(Stage::OldTableRetired, ExtendedTable, ExtendedTable, ExtendedTable, Blocked),
        (false, _, true) => Err(RefusedFlags::RetiredWhileStillWritten),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suffixed_name_keeps_its_suffix_within_64_characters() {
        let old: TableName = "edxapp.courseware_studentmodulehistory".parse().unwrap();
        assert_eq!(
            old.with_suffix("_retired_20260101").to_string(),
            "edxapp.courseware_studentmodulehistory_retired_20260101"
        );
        let long: TableName = format!("edxapp.{}", "h".repeat(64)).parse().unwrap();
        let suffixed = long.with_suffix("_new");
        assert_eq!(suffixed.table().len(), 64);
        assert!(suffixed.table().ends_with("h_new"), "{suffixed}");
        assert_eq!(suffixed.to_string().parse::<TableName>(), Ok(suffixed));
    }

    fn flags(extended: bool, multiple: bool, read_only: bool) -> Flags {
        Flags {
            enable_csmh_extended: extended,
            enable_reading_from_multiple_history_tables: multiple,
            read_only_from_csmhe: read_only,
        }
    }

    /// Every flag combination with the row the table in docs/routing.md ("From flags to a route") gives it, written
    /// out independently of `routing_table`: (flags, INSERT, SELECT, UPDATE/DELETE, anything else), `None` for
    /// refused.
    #[test]
    fn all_eight_flag_combinations_follow_the_documented_table() {
        use Target::{Blocked as B, BothTables as Both, ExtendedTable as Ext, OldTable as Old};
        /// The stage and the targets of INSERT, SELECT, UPDATE/DELETE and anything else; `None` if refused.
        type Row = Option<(Stage, [Target; 4])>;
        let documented: [((bool, bool, bool), Row); 8] = [
            ((false, false, false), Some((Stage::OldTableOnly, [Old, Old, Old, Old]))),
            ((false, true, false), Some((Stage::OldTableOnly, [Old, Old, Old, Old]))),
            ((true, true, false), Some((Stage::ExtendedTableReadingBoth, [Ext, Both, Both, Old]))),
            ((true, false, false), Some((Stage::ExtendedTableOnlyReads, [Ext, Ext, Both, Old]))),
            ((true, false, true), Some((Stage::OldTableRetired, [Ext, Ext, Ext, B]))),
            ((true, true, true), Some((Stage::OldTableRetired, [Ext, Ext, Ext, B]))),
            ((false, false, true), None),
            ((false, true, true), None),
        ];
        for ((extended, multiple, read_only), expected) in documented {
            let actual = routing_table(flags(extended, multiple, read_only))
                .map(|table| (table.stage(), StatementKind::ALL.map(|kind| table.route(kind))))
                .ok();
            assert_eq!(actual, expected, "flags ({extended}, {multiple}, {read_only})");
        }
    }

    #[test]
    fn refused_combination_names_the_flag_and_explains_why() {
        let error = routing_table(flags(false, true, true)).unwrap_err();
        assert_eq!(error.flag(), Flag::ReadOnlyFromCsmhe);
        let message = error.to_string();
        assert!(message.contains("READ_ONLY_FROM_CSMHE") && message.contains("ENABLE_CSMH_EXTENDED"), "{message}");
        assert!(message.contains("cannot be retired"), "{message}");
    }

    #[test]
    fn display_has_one_aligned_line_per_statement_kind() {
        let table = routing_table(flags(true, true, false)).unwrap();
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "INSERT          -> rewrite to the extended table",
                "SELECT          -> fan out to both tables, merged",
                "UPDATE, DELETE  -> fan out to both tables, merged",
                "anything else   -> old table (passthrough)",
            ]
        );
    }

    #[test]
    fn stage_names_fit_on_one_line() {
        for stage in Stage::ALL {
            assert!(!stage.to_string().contains('\n'));
        }
    }

    #[test]
    fn each_stage_has_canonical_flags_that_select_it() {
        let canonical = [
            (Stage::OldTableOnly, flags(false, false, false)),
            (Stage::ExtendedTableReadingBoth, flags(true, true, false)),
            (Stage::ExtendedTableOnlyReads, flags(true, false, false)),
            (Stage::OldTableRetired, flags(true, false, true)),
        ];
        assert_eq!(canonical.map(|(stage, _)| stage), Stage::ALL);
        for (stage, expected) in canonical {
            assert_eq!(stage.flags(), expected, "{stage:?}");
            assert_eq!(routing_table(stage.flags()).map(|table| table.stage()), Ok(stage));
        }
    }

    #[test]
    fn table_names_parse_into_schema_and_table() {
        let name: TableName = "edxapp.courseware_studentmodulehistory".parse().unwrap();
        assert_eq!(name.schema(), "edxapp");
        assert_eq!(name.table(), "courseware_studentmodulehistory");
        assert_eq!(name.to_string(), "edxapp.courseware_studentmodulehistory");
        assert_eq!(name.quoted(), "`edxapp`.`courseware_studentmodulehistory`");
    }

    #[test]
    fn table_names_must_be_schema_qualified_plain_identifiers() {
        let cases = [
            ("courseware_studentmodulehistory", "has no schema"),
            ("a.b.c", "more than one dot"),
            (".history", "not a plain identifier"),
            ("edxapp.", "not a plain identifier"),
            ("edxapp.`history`", "not a plain identifier"),
            ("edx-app.history", "not a plain identifier"),
            ("edxapp.123", "not a plain identifier"),
        ];
        for (name, expected) in cases {
            let message = name.parse::<TableName>().unwrap_err().to_string();
            assert!(message.contains(expected), "{name}: {message}");
            assert!(message.contains(name), "{name}: {message}");
        }
        let too_long = format!("edxapp.{}", "t".repeat(MAX_IDENTIFIER_LEN + 1));
        assert!(too_long.parse::<TableName>().is_err());
    }

    #[test]
    fn names_differing_only_in_case_are_the_same_table() {
        let lower: TableName = "edxapp.history".parse().unwrap();
        let upper: TableName = "EDXAPP.History".parse().unwrap();
        let other: TableName = "edxapp_csmh.history".parse().unwrap();
        assert!(lower.same_table_as(&upper));
        assert!(!lower.same_table_as(&other));
    }
}
