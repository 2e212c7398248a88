//! Deciding what happens to a statement.
//!
//! [`Router::classify`] is the one classification step, for the session and for `csmh-proxy route` alike: every
//! statement passes the [`Prefilter`]; the few whose text names the old history table are parsed and get a
//! [`Route`] from the [`Router`] of the configuration snapshot in force: passed through, rewritten to the
//! extended table, fanned out to both tables, or refused. A route carries the whole decision, the server each
//! statement runs on included, so the session only carries it out. The router is a pure function of the
//! statement bytes and the snapshot: it never sees a socket.

pub mod cache;
pub mod classify;
pub mod literals;
pub mod masking;
pub mod prefilter;
pub mod rewrite;
pub mod source;
pub mod template;

use sqlparser::dialect::MySqlDialect;
use std::ops::Range;
use std::sync::Arc;

use sqlparser::parser::{Parser, ParserOptions};
use sqlparser::tokenizer::Token;

pub use cache::{CacheOutcome, RouteCache};
pub use prefilter::Prefilter;

use crate::history::{RoutingTable, StatementKind, TableName, Target};
use crate::merge::{MergePlan, SideClauses, TableColumns};
use crate::protocol::errors::{MysqlError, code, sqlstate};
use crate::string_literal::{self, ClientCharset, DoubleQuotes, Escaping, Reading};
use crate::topology::{Server, Topology};
use classify::{Read, Shape, Unroutable, Write};
use rewrite::Splicer;
use source::{Mention, Source, Tok};

/// What the proxy does with one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Relay the statement unchanged to the client's own backend connection.
    Passthrough,
    /// Send `sql` instead: the statement with the old table replaced by the extended one.
    Rewrite(Rewritten),
    /// Run the statement against both tables and answer as if they were one.
    FanOut(FanOut),
    /// Refuse with error 1142: the statement would reach the retired old table outside the routing.
    Block(MysqlError),
    /// Refuse with error 1235: the statement names the table but cannot be routed exactly.
    Refuse(Refusal),
}

/// A statement the router refuses: the error the client gets, and the reason the log gives (without the
/// parser's details, which may quote the statement's values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Error 1235, with the whole explanation.
    pub error: MysqlError,
    /// Why, in the proxy's words.
    pub reason: String,
}

/// A statement rewritten to the extended table, and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new statement text.
    pub sql: Vec<u8>,
    /// Which connection runs it.
    pub on: Server,
    /// It inserts rows into the extended table, whose ids must not collide with the old table's.
    pub inserts: bool,
    /// Subqueries on `edxapp` tables to run there first, their rows written into `sql` as lists of values
    /// (only for the `csmh` connection of a separate server, which does not have those tables).
    pub inline: Vec<Inline>,
    /// The rights on the old table the client's statement needs, as it wrote it.
    pub rights: Rights,
    /// The client's statement with the old table named with its schema: what its grants are checked with on
    /// `edxapp`, so that they are the grants on the old table whatever database the session is in.
    pub check: Vec<u8>,
}

/// The rights on the old table a statement needs: its verb's (REPLACE also DELETE's, `ON DUPLICATE KEY UPDATE`
/// also UPDATE's), and SELECT when it reads the table's columns (a subquery, a WHERE or ORDER BY, an assignment
/// that is not a literal). Across two servers the client's own grants are checked on `edxapp` before the
/// extended table serves the statement, and the check is remembered for the session by these rights
/// (docs/routing.md, "Grants across two servers").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rights(u8);

impl Rights {
    /// Reading rows.
    pub const SELECT: Rights = Rights(1);
    /// Adding rows.
    pub const INSERT: Rights = Rights(1 << 1);
    /// Changing rows.
    pub const UPDATE: Rights = Rights(1 << 2);
    /// Removing rows.
    pub const DELETE: Rights = Rights(1 << 3);

    /// Both sets of rights.
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

/// An uncorrelated `IN (SELECT ...)` subquery the `csmh` side cannot run: the proxy runs it on the client's
/// `edxapp` connection and writes its values at `at` in the statement, as `(v1, v2, ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inline {
    /// Where the list of values goes in the statement.
    pub at: usize,
    /// The subquery, without its parentheses.
    pub query: Vec<u8>,
}

/// How a statement reaches both tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanOut {
    /// Both tables on one server: one statement reading a `UNION ALL` of both, on the client's connection. For
    /// prepared reads on one server ([`Form::Prepare`]), and reads the merge cannot answer.
    Union(Vec<u8>),
    /// A read run on each table and merged in the proxy as the plan says.
    Merge(Box<MergeRead>),
    /// The same UPDATE or DELETE on each table; the client gets one OK with the affected rows summed.
    Writes {
        /// The statement for the old table (the client's own text).
        old: Vec<u8>,
        /// The statement for the extended table.
        extended: Vec<u8>,
        /// Subqueries of `extended` to run on `edxapp` first (two servers).
        inline: Vec<Inline>,
        /// The connection `extended` runs on: the client's own on one server, the `csmh` one on two.
        on: Server,
    },
}

/// A read of both tables merged in the proxy: the statement for each side, and how to merge their rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRead {
    /// The statement for the old table in the text protocol, on the client's `edxapp` connection: the client's
    /// own, with the merge's ORDER BY and LIMIT (an INT and a BIGINT UNSIGNED value are the same text).
    pub old: Vec<u8>,
    /// The statement for the extended table.
    pub extended: Vec<u8>,
    /// What the merge does.
    pub plan: MergePlan,
    /// Where the two statements run, with what each topology needs besides.
    pub servers: MergeServers,
}

/// Where the two statements of a merged read run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeServers {
    /// Both on the client's connection, sent together (which spares the server the union's temporary tables).
    OneServer {
        /// The read as one `UNION ALL` statement, which answers it when the merge gives up (a held result too
        /// large, column types it cannot combine); or the refusal to answer with when there is no such form.
        union: Result<Vec<u8>, MysqlError>,
    },
    /// At the same time on the `edxapp` connection (old table) and the `csmh` connection (extended table).
    TwoServers {
        /// The statement for the old table in the binary protocol, whose values must be encoded as the extended
        /// side's are: the table read through a derived table with `id` and `student_module_id` widened.
        old_widened: Vec<u8>,
        /// Subqueries of `extended` to run on `edxapp` first.
        inline: Vec<Inline>,
    },
}

/// How a statement reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A text statement to run (COM_QUERY).
    Query,
    /// A statement to prepare (COM_STMT_PREPARE): on one server, reads of both tables are one `UNION ALL`
    /// statement, which the client's connection can prepare and which needs no holding of results.
    Prepare,
}

/// What [`Router::classify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// The pre-filter says the text cannot name the history table: passed through without parsing.
    Unnamed,
    /// The text may name the history table: the route the router chose.
    Named(Route),
}

impl Classified {
    /// The route: [`Route::Passthrough`] for a statement that does not name the table.
    pub fn into_route(self) -> Route {
        match self {
            Classified::Unnamed => Route::Passthrough,
            Classified::Named(route) => route,
        }
    }
}

/// The routing decisions of one configuration snapshot.
#[derive(Debug, Clone)]
pub struct Router {
    table: RoutingTable,
    old: TableName,
    extended: TableName,
    topology: Topology,
    prefilter: Prefilter,
    /// The longest statement it parses; a longer one that may name the history table is refused.
    parse_limit: usize,
    /// Routes of the text statements it has routed, by their masked literals.
    cache: Arc<RouteCache>,
}

impl Router {
    /// A router for the stage `table` routes by, the two tables, and where they live.
    pub fn new(table: RoutingTable, old: TableName, extended: TableName, topology: Topology) -> Router {
        let prefilter = Prefilter::new(old.table());
        Router { table, old, extended, topology, prefilter, parse_limit: usize::MAX, cache: Arc::default() }
    }

    /// This router, refusing with error 1235 rather than parsing a statement longer than `bytes` that may name
    /// the history table (`listen.max_parsed_statement_bytes`): parsing costs a few times a statement's size.
    pub fn with_parse_limit(self, bytes: usize) -> Router {
        Router { parse_limit: bytes, ..self }
    }

    /// The routing table in force.
    pub fn table(&self) -> RoutingTable {
        self.table
    }

    /// The pre-filter [`Router::classify`] runs first.
    pub fn prefilter(&self) -> &Prefilter {
        &self.prefilter
    }

    /// Where the two tables live.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The classification of one statement, as the session and `csmh-proxy route` both make it: the pre-filter,
    /// then, when the text may name the history table, the route (from the route cache when it has it).
    pub fn classify(&self, sql: &[u8], form: Form) -> Classified {
        self.classify_reporting(sql, form).0
    }

    /// [`Router::classify`], and how the route cache served the statement: `None` when it was not asked, because
    /// the pre-filter let the statement pass or the flags route nothing. Only text statements are cached; a
    /// statement to prepare is [`CacheOutcome::Skipped`].
    pub fn classify_reporting(&self, sql: &[u8], form: Form) -> (Classified, Option<CacheOutcome>) {
        if !self.prefilter.matches(sql) {
            return (Classified::Unnamed, None);
        }
        if self.is_passthrough() {
            return (Classified::Named(Route::Passthrough), None);
        }
        let (route, outcome) = match form {
            Form::Query => self.cache.route(self, sql),
            Form::Prepare => (self.route_prepared(sql), CacheOutcome::Skipped),
        };
        (Classified::Named(route), Some(outcome))
    }

    /// The route cache [`Router::classify`] uses.
    pub fn cache(&self) -> &RouteCache {
        &self.cache
    }

    /// [`Router::classify_reporting`] for a session that reads statements as `reading` says. A statement naming
    /// the history table that the session may read otherwise than the tokenizer is refused unparsed: routed by
    /// the tokenizer's reading, its rewrite could splice into what the server reads as SQL, or miss a mention of
    /// the history table there. That is a string with a backslash before its closing quote under
    /// `NO_BACKSLASH_ESCAPES`, and a backslash or backquote that may end a character of a client character set
    /// of [`SPLIT_BY_ESCAPES`](crate::string_literal::SPLIT_BY_ESCAPES), and double quotes under `ANSI_QUOTES`.
    pub fn classify_for(&self, sql: &[u8], form: Form, reading: Reading) -> (Classified, Option<CacheOutcome>) {
        let strings_may_differ = reading.escaping == Escaping::DoubledQuotes && sql.contains(&b'\\');
        let charset_may_differ = reading.charset == ClientCharset::SplitByEscapes;
        let quotes_may_differ = reading.quotes == DoubleQuotes::Names && sql.contains(&b'"');
        if (strings_may_differ || charset_may_differ || quotes_may_differ) && self.parses(sql) {
            if let Some(refusal) = self.refuse_read_otherwise(sql, reading) {
                return (Classified::Named(Route::Refuse(refusal)), Some(CacheOutcome::Skipped));
            }
        }
        self.classify_reporting(sql, form)
    }

    /// Whether the session must read its client's settings (`character_set_client`, `sql_mode`) for
    /// [`Router::classify_for`] to classify `sql`: the statement is one the router parses, and it holds a byte
    /// that a character of a set of [`SPLIT_BY_ESCAPES`](crate::string_literal::SPLIT_BY_ESCAPES) could take
    /// from the tokenizer's reading, or a double quote that may open a name. Rare: edxapp's statements are ASCII
    /// but for values, with names in backquotes and double quotes in values escaped.
    pub fn needs_session_settings(&self, sql: &[u8]) -> bool {
        self.parses(sql) && (string_literal::may_hide_quoting(sql) || string_literal::may_open_double_quotes(sql))
    }

    /// Whether `sql` is a statement the router tokenizes: one that may name the history table, with flags that
    /// route something, and not longer than the parse limit.
    fn parses(&self, sql: &[u8]) -> bool {
        !self.is_passthrough() && self.prefilter.matches(sql) && sql.len() <= self.parse_limit
    }

    /// The refusal of `sql` if a session reading statements as `reading` says reads it otherwise than the
    /// tokenizer (a statement the tokenizer cannot read at all is refused by the route).
    fn refuse_read_otherwise(&self, sql: &[u8], reading: Reading) -> Option<Refusal> {
        if reading.charset == ClientCharset::SplitByEscapes && string_literal::may_hide_quoting(sql) {
            return Some(self.refusal(Unroutable::new(
                "a backslash or backquote after a byte above 0x7F may end a multi-byte character of the session's \
                 character set (character_set_client is one of big5, cp932, gb18030, gbk, sjis, or could not be \
                 read), which the router reads otherwise",
            )));
        }
        if reading.escaping == Escaping::Backslashes && reading.quotes == DoubleQuotes::Strings {
            return None;
        }
        let source = Source::new(sql);
        let tokens = source.tokens().ok()?;
        if reading.quotes == DoubleQuotes::Names && source::double_quoted(&tokens).next().is_some() {
            return Some(self.refusal(Unroutable::new(
                "text in double quotes is a name under the session's ANSI_QUOTES (or its sql_mode could not be \
                 read), where the router reads a string: write names in backquotes and strings in single quotes",
            )));
        }
        if reading.escaping == Escaping::Backslashes {
            return None;
        }
        source::string_read_otherwise_without_backslash_escapes(&tokens, sql)?;
        Some(self.refusal(Unroutable::new(
            "a string with a backslash before its closing quote is read otherwise under the session's \
             NO_BACKSLASH_ESCAPES",
        )))
    }

    /// The old history table.
    pub fn old(&self) -> &TableName {
        &self.old
    }

    /// The extended history table.
    pub fn extended(&self) -> &TableName {
        &self.extended
    }

    /// Whether any statement is routed at all: with every kind going to the old table, statements that pass the
    /// pre-filter need no parsing.
    pub fn is_passthrough(&self) -> bool {
        StatementKind::ALL.iter().all(|&kind| self.table.route(kind) == Target::OldTable)
    }

    /// The route of one statement (the text of a COM_QUERY), made by tokenizing and parsing it (the route cache
    /// is [`Router::classify`]'s).
    pub fn route(&self, sql: &[u8]) -> Route {
        self.route_with(sql, OneServerReads::Merge)
    }

    /// The route of a statement to prepare (COM_STMT_PREPARE), see [`Form::Prepare`].
    pub fn route_prepared(&self, sql: &[u8]) -> Route {
        self.route_with(sql, OneServerReads::Union)
    }

    fn route_with(&self, sql: &[u8], reads: OneServerReads) -> Route {
        // The checks of a text that holds the name (several statements, executable comments) need it there.
        if self.is_passthrough() || !self.prefilter.matches(sql) {
            return Route::Passthrough;
        }
        if sql.len() > self.parse_limit {
            return Route::Refuse(self.too_long(sql.len()));
        }
        let source = Source::new(sql);
        match stacker::maybe_grow(PARSE_RED_ZONE, PARSE_STACK, || self.plan(&source, reads)) {
            Ok(route) => route,
            Err(unroutable) => Route::Refuse(self.refusal(unroutable)),
        }
    }

    fn plan(&self, source: &Source<'_>, reads: OneServerReads) -> Result<Route, Unroutable> {
        let tokens =
            source.tokens().map_err(|e| Unroutable::with_detail("cannot read the statement", e.to_string()))?;
        if source::several_statements(&tokens) {
            return Err(Unroutable::new(
                "several statements in one query whose text holds the history table's name (in a string or a \
                 comment too): an earlier one can change how the server reads the later ones (SET NAMES, \
                 sql_mode); send them one at a time",
            ));
        }
        if source::has_executable_comment(source.bytes()) {
            return Err(Unroutable::new(
                "an executable comment (`/*!...*/`, `/*M!...*/`) in a statement whose text holds the history \
                 table's name",
            ));
        }
        if let Some(misreading) = source::misreading(source, &tokens) {
            return Err(Unroutable::new(misreading.describe()));
        }
        if source::runs_sql_from_text(&tokens) {
            return Err(Unroutable::new(
                "PREPARE ... FROM or EXECUTE IMMEDIATE with the history table's name in its text: the router cannot \
                 route the statement it runs",
            ));
        }
        let mentions = source::mentions(&tokens, &self.old);
        if mentions.is_empty() {
            return Ok(Route::Passthrough);
        }
        let statement = parse_one(&tokens)?;
        let shape = classify::shape(&statement, &self.old)?;
        match self.table.route(shape.kind) {
            Target::OldTable if shape.kind == StatementKind::Other && !shape.reads.is_empty() && !shape.schema_only => {
                Err(Unroutable::new(
                    "the history table is read by a statement that is not a SELECT of its rows (INSERT ... SELECT \
                     into another table, CREATE TABLE ... SELECT, a SET, or an UPDATE or DELETE of another table \
                     with a subquery): csmh-proxy routes such a statement to the old table alone, which no longer \
                     holds every history row",
                ))
            }
            Target::OldTable => Ok(Route::Passthrough),
            Target::Blocked if shape.schema_only => Ok(Route::Passthrough),
            Target::Blocked => Ok(Route::Block(self.blocked(&tokens))),
            target => {
                let plan = Plan {
                    router: self,
                    reads,
                    source,
                    tokens: &tokens,
                    mentions: &mentions,
                    shape: &shape,
                    statement: &statement,
                };
                plan.check_every_mention_is_routed()?;
                match target {
                    Target::ExtendedTable => plan.to_extended(),
                    _ => plan.to_both(),
                }
            }
        }
    }

    fn refusal(&self, unroutable: Unroutable) -> Refusal {
        let message = format!("csmh-proxy cannot route this statement on {}: {unroutable}", self.old.quoted());
        Refusal { error: MysqlError::not_supported(message), reason: unroutable.reason }
    }

    fn too_long(&self, len: usize) -> Refusal {
        let reason = format!(
            "the statement is {len} bytes, more than the {} bytes csmh-proxy parses to route it",
            self.parse_limit
        );
        let message = format!(
            "csmh-proxy does not support statements naming {} longer than {} bytes \
             (listen.max_parsed_statement_bytes): this one is {len} bytes",
            self.old.quoted(),
            self.parse_limit
        );
        Refusal { error: MysqlError::not_supported(message), reason }
    }

    fn blocked(&self, tokens: &[Tok]) -> MysqlError {
        let verb = tokens.first().and_then(Tok::word).unwrap_or("this").to_ascii_uppercase();
        MysqlError::new(
            code::ER_TABLEACCESS_DENIED_ERROR,
            sqlstate::ACCESS_OR_SYNTAX,
            format!(
                "{verb} command denied for table {}: the table is retired (READ_ONLY_FROM_CSMHE is on in \
                 csmh-proxy's configuration)",
                self.old.quoted()
            ),
        )
    }
}

/// The stack the parser, the classification and the rewrites of one statement need. Their recursion follows the
/// statement's nesting, which the parser bounds (sqlparser's recursion limit), and sqlparser moves to a new stack
/// segment when less than 128 KiB is left. An optimized build's frames are small: a statement nested to the limit
/// runs in 64 KiB, so with 1 MiB left (a runtime worker thread has 2 MiB) the router parses where it is. An
/// unoptimized build's frames are many times larger, some of sqlparser's steps outgrow its 128 KiB margin, and a
/// statement nested 15 subqueries deep overflowed the worker's stack, aborting the whole proxy: there the router
/// always parses on a stack of its own. Only the pages a parse touches are ever committed.
const PARSE_RED_ZONE: usize = if cfg!(debug_assertions) { PARSE_STACK } else { 1 << 20 };

/// The size of the stack the router parses on when it needs one of its own.
const PARSE_STACK: usize = 16 << 20;

fn parse_one(tokens: &[Tok]) -> Result<sqlparser::ast::Statement, Unroutable> {
    let dialect = MySqlDialect {};
    let mut statements = Parser::new(&dialect)
        .with_options(ParserOptions::new().with_unescape(false))
        .with_tokens_with_locations(tokens.iter().map(|t| t.token.clone()).collect())
        .parse_statements()
        .map_err(|e| Unroutable::with_detail("cannot parse it", e.to_string()))?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        _ => Err(Unroutable::new("send statements naming the history table one at a time, not as a multi-statement")),
    }
}

fn merged(read: MergeRead) -> Route {
    Route::FanOut(FanOut::Merge(Box::new(read)))
}

fn union(sql: Vec<u8>) -> Route {
    Route::FanOut(FanOut::Union(sql))
}

/// A WHERE condition to copy into each branch of a union.
struct Condition {
    /// Where it lies in the statement.
    range: Range<usize>,
    /// Its text, with the statement's qualifier rewrites.
    text: Vec<u8>,
}

/// How reads of both tables on one server are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OneServerReads {
    /// One statement per table, merged in the proxy, when the merge can answer the read.
    Merge,
    /// One `UNION ALL` statement.
    Union,
}

/// One statement being routed, with everything known about it.
struct Plan<'r, 's> {
    router: &'r Router,
    reads: OneServerReads,
    statement: &'r sqlparser::ast::Statement,
    source: &'r Source<'s>,
    tokens: &'r [Tok],
    mentions: &'r [Mention],
    shape: &'r Shape,
}

impl Plan<'_, '_> {
    /// Every place naming the old table as a table must be one the classification understood; otherwise a
    /// rewrite could leave a reference to the old table behind.
    fn check_every_mention_is_routed(&self) -> Result<(), Unroutable> {
        let write_start = self.shape.write.as_ref().map(|w| match w {
            Write::Insert { start, .. } | Write::UpdateDelete { start } => *start,
        });
        let understood = |start| self.shape.reads.iter().any(|r| r.start == start) || write_start == Some(start);
        match self.mentions.iter().find(|m| matches!(m, Mention::Table { start, .. } if !understood(*start))) {
            Some(_) => Err(Unroutable::new("the history table is named in a place csmh-proxy does not route")),
            None => Ok(()),
        }
    }

    fn extended_server(&self) -> Server {
        self.router.topology.extended_server()
    }

    fn to_extended(&self) -> Result<Route, Unroutable> {
        self.check_no_id_may_hide_an_old_row()?;
        let splicer = match &self.shape.write {
            Some(write) => self.extended_write(write)?,
            None => self.reads_replaced(|read, alias| {
                Ok(rewrite::extended_read(
                    &String::from_utf8_lossy(alias),
                    &self.router.extended,
                    self.shape.selects_wildcard,
                )
                .into_bytes())
                .map(|text| (read, text))
            })?,
        };
        let (sql, inline) = self.finish(splicer)?;
        let inserts = matches!(self.shape.write, Some(Write::Insert { .. }));
        let (on, rights, check) = (self.extended_server(), self.rights(), self.tables_qualified().render_all()?);
        Ok(Route::Rewrite(Rewritten { sql, on, inserts, inline, rights, check }))
    }

    /// While both tables are read, a read finds an id in the extended table before the old one: an INSERT into
    /// the extended table with an id of its own, or an UPDATE moving a row to another id, could hide an old row
    /// with that id (where the old table would have answered 1062, duplicate entry), and the copy of that row
    /// would then find its id taken. Refused; without an id the extended table numbers the row above every old
    /// id (`csmh-proxy init`).
    fn check_no_id_may_hide_an_old_row(&self) -> Result<(), Unroutable> {
        let reads_both = self.router.table.route(StatementKind::Select) == Target::BothTables;
        if reads_both && classify::sets_an_id(self.statement) {
            return Err(Unroutable::new(
                "a write giving a history row an id of its own (an INSERT naming the id, an UPDATE of the id), \
                 while both tables are read: the old table may hold a row with that id, which the row would hide; \
                 leave the id to the table (omit it, or give NULL or DEFAULT)",
            ));
        }
        Ok(())
    }

    /// The rights on the old table the statement needs: statements that need the same rights share the
    /// session's remembered grants check, so every right a form of statement may need counts.
    fn rights(&self) -> Rights {
        use sqlparser::ast::{Expr, Statement};
        let none = Rights::default();
        let reads_columns = |condition: bool| if condition { Rights::SELECT } else { none };
        let verb = match self.statement {
            Statement::Insert(insert) => Rights::INSERT
                .union(if insert.replace_into { Rights::DELETE } else { none })
                .union(if insert.on.is_some() { Rights::UPDATE.union(Rights::SELECT) } else { none })
                .union(reads_columns(insert.returning.is_some())),
            Statement::Update(update) => Rights::UPDATE.union(reads_columns(
                update.selection.is_some()
                    || !update.order_by.is_empty()
                    || update.returning.is_some()
                    || update.assignments.iter().any(|a| !matches!(a.value, Expr::Value(_))),
            )),
            Statement::Delete(delete) => Rights::DELETE.union(reads_columns(
                delete.selection.is_some() || !delete.order_by.is_empty() || delete.returning.is_some(),
            )),
            _ => Rights::SELECT,
        };
        verb.union(reads_columns(!self.shape.reads.is_empty()))
    }

    /// Renders a statement for the extended table. On a separate `csmh` server only the history table exists,
    /// so subqueries on `edxapp` tables become holes the session fills with their values, and anything else
    /// that would read an `edxapp` table there is refused.
    fn finish(&self, mut splicer: Splicer<'_>) -> Result<(Vec<u8>, Vec<Inline>), Unroutable> {
        if self.router.topology == Topology::OneServer {
            return Ok((splicer.render_all()?, Vec::new()));
        }
        if self.shape.reads.iter().any(|read| !read.alone) || self.shape.inserts_from_select {
            return Err(Unroutable::new("the extended table's server has no edxapp tables to join or select from"));
        }
        self.check_nothing_is_read_from_the_session()?;
        let subqueries = rewrite::subqueries(self.tokens);
        let mut queries = Vec::new();
        for subquery in &subqueries {
            if !subquery.after_in {
                return Err(Unroutable::new(
                    "only `IN (SELECT ...)` subqueries on edxapp tables can be used with the extended table on its \
                     own server",
                ));
            }
            if self.mentions.iter().any(|m| m.within(&subquery.range)) {
                return Err(Unroutable::new("a subquery reading the history table again cannot be routed"));
            }
            if self.refers_to_a_read(&subquery.range) {
                return Err(Unroutable::new(
                    "a subquery that refers to the history table's columns (a correlated subquery) cannot run on \
                     edxapp alone",
                ));
            }
            splicer.hole(subquery.range.clone());
            queries.push(self.source.bytes()[subquery.inner.clone()].to_vec());
        }
        let inlined = |at: usize| subqueries.iter().any(|subquery| subquery.range.contains(&at));
        let old = &self.router.old;
        let other_tables = classify::other_tables(self.statement, old, &self.router.extended);
        if other_tables.into_iter().any(|start| !inlined(self.source.offset(start))) {
            return Err(Unroutable::new(
                "the extended table's server has no edxapp tables: only the history table may be read there, \
                 other tables only in `IN (SELECT ...)` subqueries",
            ));
        }
        let (sql, places) = splicer.render_with_holes()?;
        let inline = places.into_iter().zip(queries).map(|(at, query)| Inline { at, query }).collect();
        Ok((sql, inline))
    }

    /// Whether the bytes in `range` qualify a column with a name the statement reads the history table by (`h.`
    /// or `` `h`. `` for `… AS h` or ``… AS `h` ``), compared unquoted and without case: a subquery there is
    /// correlated, and run on `edxapp` alone it would not know the name.
    fn refers_to_a_read(&self, range: &Range<usize>) -> bool {
        let names: Vec<String> = self.shape.reads.iter().map(|read| self.read_name(read)).collect();
        self.qualifiers_in(range).any(|name| names.iter().any(|known| known.eq_ignore_ascii_case(name)))
    }

    /// The name the statement reads `read` by (its alias, or the table's name), unquoted.
    fn read_name(&self, read: &Read) -> String {
        rewrite::unquoted(rewrite::read_alias(read, self.source, self.tokens))
    }

    /// The names that qualify a column in `range` (`h` of `h.id`, unquoted); an empty one for a qualifier that is
    /// not a name (a string, under `ANSI_QUOTES` a name the tokenizer does not read as one).
    fn qualifiers_in<'a>(&'a self, range: &'a Range<usize>) -> impl Iterator<Item = &'a str> + 'a {
        let qualifies = |pair: &&[Tok]| range.contains(&pair[0].range.start) && pair[1].is_period();
        self.tokens.windows(2).filter(qualifies).map(|pair| pair[0].word().unwrap_or_default())
    }

    /// On a separate `csmh` server the statement runs in the proxy's session there, logged in with its account:
    /// what would read or set the client's session instead is refused — variables, functions of the session or
    /// the server, `SELECT ... INTO`.
    fn check_nothing_is_read_from_the_session(&self) -> Result<(), Unroutable> {
        if let Some(what) = source::bound_to_the_session(self.tokens) {
            return Err(Unroutable::with_detail(
                "a variable or a function of the session would be read on the extended table's server, in the \
                 proxy's session there, not the client's",
                what,
            ));
        }
        let is_query = matches!(self.statement, sqlparser::ast::Statement::Query(_));
        if is_query && self.tokens.iter().any(|t| t.is_keyword("INTO")) {
            return Err(Unroutable::new(
                "SELECT ... INTO would set its variables or write its file on the extended table's server",
            ));
        }
        Ok(())
    }

    fn to_both(&self) -> Result<Route, Unroutable> {
        match &self.shape.write {
            Some(write @ Write::UpdateDelete { .. }) => {
                self.check_each_table_may_answer_alone()?;
                self.check_no_id_may_hide_an_old_row()?;
                let (extended, inline) = self.finish(self.extended_write(write)?)?;
                let old = self.tables_qualified().render_all()?;
                Ok(Route::FanOut(FanOut::Writes { old, extended, inline, on: self.extended_server() }))
            }
            Some(Write::Insert { .. }) => Err(Unroutable::new("INSERT is never fanned out")),
            None => match (self.router.topology, self.reads) {
                (Topology::TwoServers, _) => Ok(merged(self.merge_read()?)),
                (Topology::OneServer, OneServerReads::Merge) => match self.merge_read() {
                    Ok(read) => Ok(merged(read)),
                    Err(_) => self.union_read().map(union),
                },
                (Topology::OneServer, OneServerReads::Union) => self.union_read().map(union),
            },
        }
    }

    /// An UPDATE or DELETE of both tables runs on each table alone, so a clause that would act on each table's
    /// rows apart is refused: a LIMIT would change up to that many rows in each table, and RETURNING would answer
    /// with two sets of rows where the client gets one OK with the counts summed.
    fn check_each_table_may_answer_alone(&self) -> Result<(), Unroutable> {
        use sqlparser::ast::Statement;
        let (limit, returning) = match self.statement {
            Statement::Update(update) => (update.limit.is_some(), update.returning.is_some()),
            Statement::Delete(delete) => (delete.limit.is_some(), delete.returning.is_some()),
            _ => (false, false),
        };
        if limit {
            return Err(Unroutable::new(
                "an UPDATE or DELETE with LIMIT cannot reach both tables: each table would change up to LIMIT rows",
            ));
        }
        if returning {
            return Err(Unroutable::new("an UPDATE or DELETE with RETURNING cannot reach both tables"));
        }
        Ok(())
    }

    /// A read of both tables on one server as one statement reading a `UNION ALL` of both.
    fn union_read(&self) -> Result<Vec<u8>, Unroutable> {
        let splicer = self.reads_replaced(|read, alias| {
            if !read.alone {
                return Err(Unroutable::new(
                    "a join with the history table cannot be read from both tables; query it alone",
                ));
            }
            let condition = self.branch_condition(read)?;
            let alias = String::from_utf8_lossy(alias);
            Ok((read, rewrite::union_read(&alias, condition.as_deref(), &self.router.old, &self.router.extended)))
        })?;
        splicer.render_all()
    }

    /// A read of both tables merged in the proxy: each side reads its table under the statement's name for it,
    /// with the old table's column order, and sorts and limits as the merge needs. On one server the old side
    /// skips the rows copied to the extended table, and the read as one `UNION ALL` statement comes along for
    /// when the merge gives up; across two servers the old side comes also in a form with the extended table's
    /// types, for the binary protocol.
    fn merge_read(&self) -> Result<MergeRead, Unroutable> {
        let sqlparser::ast::Statement::Query(query) = self.statement else {
            return Err(Unroutable::new("only a SELECT can read both tables"));
        };
        let [read] = self.shape.reads.as_slice() else {
            return Err(Unroutable::new("the history table must be read once, alone"));
        };
        if !classify::reads_the_outer_from(query, read) {
            return Err(Unroutable::new(
                "the merge answers a SELECT from the history table, not one reading it in a subquery or a derived table",
            ));
        }
        let plan = MergePlan::for_select(query, &TableColumns::HISTORY)
            .map_err(|e| Unroutable::with_detail("the merge cannot answer this read exactly", e.to_string()))?;
        let alias = String::from_utf8_lossy(rewrite::read_alias(read, self.source, self.tokens)).into_owned();
        let clauses = plan.side_clauses(&format!("{alias}.`id`"));
        let condition = self.condition(read)?;
        let read_range = self.source.offset(read.start)..self.source.offset(read.end);
        let as_written = self.tables_qualified().render(read_range)?;
        let mut old_text = self.qualifiers_renamed(|_| self.router.old.table().as_bytes().to_vec());
        if self.router.topology == Topology::OneServer {
            self.exclude_copies(&mut old_text, read, &alias, condition.as_ref());
        }
        let old_sql = self.side_statement_onto(old_text, read, as_written, &clauses)?.render_all()?;
        let extended_side =
            rewrite::extended_read(&alias, &self.router.extended, self.shape.selects_wildcard).into_bytes();
        let (extended_sql, inline) = self.finish(self.side_statement(read, extended_side, &clauses)?)?;
        let servers = match self.router.topology {
            Topology::OneServer => {
                MergeServers::OneServer { union: self.union_read().map_err(|e| self.router.refusal(e).error) }
            }
            Topology::TwoServers => MergeServers::TwoServers {
                old_widened: self.widened_old_side(read, &alias, condition.as_ref(), &clauses)?,
                inline,
            },
        };
        Ok(MergeRead { old: old_sql, extended: extended_sql, plan, servers })
    }

    /// The old side of a merged read in the binary protocol: the old table through a derived table with the
    /// extended table's types. The condition moves inside the derived table, where it reads the table's own
    /// (uncast) columns, so the table's indexes serve it; moved rather than copied, so a prepared statement keeps
    /// its parameter count.
    fn widened_old_side(
        &self,
        read: &Read,
        alias: &str,
        condition: Option<&Condition>,
        clauses: &SideClauses,
    ) -> Result<Vec<u8>, Unroutable> {
        let old_side = rewrite::single_read(alias, condition.map(|c| &c.text[..]), &self.router.old, true);
        let mut old_statement = self.side_statement(read, old_side.into_bytes(), clauses)?;
        if let Some(condition) = condition {
            let keyword = self.tokens.iter().rev().find(|t| t.range.end <= condition.range.start);
            let start = keyword.filter(|t| t.is_keyword("WHERE")).map(|t| t.range.start);
            let start = start.ok_or_else(|| Unroutable::new("cannot locate the WHERE clause"))?;
            old_statement.replace(start..condition.range.end, Vec::new());
        }
        old_statement.render_all()
    }

    /// On one server, makes the old side skip the rows the extended table has a copy of, as the union does: each
    /// id is then read from the extended table when it is there, whatever the copy's values.
    fn exclude_copies(&self, side: &mut Splicer<'_>, read: &Read, alias: &str, condition: Option<&Condition>) {
        let not_copied = rewrite::not_copied(alias, &self.router.extended);
        match condition {
            Some(condition) => {
                let range = &condition.range;
                side.replace(range.start..range.start, "(");
                side.replace(range.end..range.end, format!(") AND {not_copied}"));
            }
            None => {
                let end = self.source.offset(read.end);
                side.replace(end..end, format!(" WHERE {not_copied}"));
            }
        }
    }

    /// The statement with its one read replaced by `table`, the hidden id column added to the select list, and
    /// its ORDER BY and LIMIT replaced by the merge's.
    fn side_statement(&self, read: &Read, table: Vec<u8>, clauses: &SideClauses) -> Result<Splicer<'_>, Unroutable> {
        let splicer = self.qualifiers_renamed(|_| self.router.old.table().as_bytes().to_vec());
        self.side_statement_onto(splicer, read, table, clauses)
    }

    /// [`Plan::side_statement`] with the edits already in `splicer` (which come first where edits insert at
    /// the same place).
    fn side_statement_onto<'p>(
        &'p self,
        mut splicer: Splicer<'p>,
        read: &Read,
        table: Vec<u8>,
        clauses: &SideClauses,
    ) -> Result<Splicer<'p>, Unroutable> {
        splicer.replace(self.source.offset(read.start)..self.source.offset(read.end), table);
        let from = rewrite::top_level(self.tokens, &["FROM"]).ok_or_else(|| Unroutable::new("no FROM clause"))?;
        if let Some(extra) = &clauses.extra_column {
            splicer.replace(from..from, format!("{extra} "));
        }
        let end = rewrite::statement_end(self.tokens);
        let tail = rewrite::top_level(self.tokens, &["ORDER", "LIMIT"]).unwrap_or(end);
        splicer.replace(tail..end, clauses.tail.clone());
        Ok(splicer)
    }

    /// The statement with each read of the old table replaced by what `replacement` makes of it, and column
    /// qualifiers that name the table with its schema reduced to the name the read is known by.
    fn reads_replaced<'p>(
        &'p self,
        mut replacement: impl FnMut(&'p Read, &[u8]) -> Result<(&'p Read, Vec<u8>), Unroutable>,
    ) -> Result<Splicer<'p>, Unroutable> {
        let mut splicer = self.qualifiers_renamed(|_| self.router.old.table().as_bytes().to_vec());
        for read in &self.shape.reads {
            let alias = rewrite::read_alias(read, self.source, self.tokens);
            let (read, text) = replacement(read, alias)?;
            splicer.replace(self.source.offset(read.start)..self.source.offset(read.end), text);
        }
        Ok(splicer)
    }

    /// The condition of the WHERE clause of the SELECT that reads `read`: where it lies, and its text with the
    /// statement's qualifier rewrites.
    fn condition(&self, read: &Read) -> Result<Option<Condition>, Unroutable> {
        if !read.has_where {
            return Ok(None);
        }
        let range = rewrite::where_condition(self.tokens, self.source.offset(read.end))?;
        let splicer = self.qualifiers_renamed(|_| self.router.old.table().as_bytes().to_vec());
        Ok(Some(Condition { text: splicer.render(range.clone())?, range }))
    }

    /// The condition to copy into each branch of a union read. A prepared statement's condition with `?`
    /// placeholders is not copied, since copies would change its parameter count: MariaDB pushes simple
    /// conditions into the union by itself, but not subqueries, so a condition with both is refused.
    fn branch_condition(&self, read: &Read) -> Result<Option<Vec<u8>>, Unroutable> {
        let Some(condition) = self.condition(read)? else { return Ok(None) };
        if self.read_in_a_subquery(read) && self.names_an_outer_query(read, &condition.range) {
            return Err(Unroutable::new(
                "a correlated subquery reading the history table while both tables are read: both are read \
                 through a derived table, which cannot see the outer query",
            ));
        }
        if !self.has_placeholders(&condition.range) {
            return Ok(Some(condition.text));
        }
        if rewrite::subqueries(self.tokens).iter().any(|s| s.range.start >= condition.range.start) {
            return Err(Unroutable::new(
                "a prepared read of both tables whose condition has both parameters and a subquery",
            ));
        }
        Ok(None)
    }

    /// Whether `read` is in a subquery or a derived table, not the statement's own FROM.
    fn read_in_a_subquery(&self, read: &Read) -> bool {
        match self.statement {
            sqlparser::ast::Statement::Query(query) => !classify::reads_the_outer_from(query, read),
            _ => true,
        }
    }

    /// Whether the condition in `range` of the read `read` (in a subquery) qualifies a column with a name other
    /// than the read's own (its alias, or the table with its schema): a column of an outer query. A name an inner
    /// subquery of the condition declares counts too (refused, although not correlated).
    fn names_an_outer_query(&self, read: &Read, range: &Range<usize>) -> bool {
        let alias = self.read_name(read);
        let own = [alias.as_str(), self.router.old.table(), self.router.old.schema()];
        self.qualifiers_in(range).any(|name| !own.iter().any(|known| known.eq_ignore_ascii_case(name)))
    }

    /// Whether `range` holds a `?` parameter placeholder.
    fn has_placeholders(&self, range: &Range<usize>) -> bool {
        self.tokens.iter().any(|t| {
            matches!(t.token.token, Token::Placeholder(_)) && t.range.start >= range.start && t.range.end <= range.end
        })
    }

    /// The client's statement with every name of the old table as a table written with its schema. An
    /// unqualified name is taken for the old table whatever database the session is in (the proxy does not
    /// follow it); so what runs on `edxapp` in the client's name, and what its grants are checked with, must
    /// mean that table too, never a table of that name in another database.
    fn tables_qualified(&self) -> Splicer<'_> {
        let mut splicer = Splicer::new(self.source.bytes());
        for mention in self.mentions {
            if let Mention::Table { range, .. } = mention {
                splicer.replace(range.clone(), self.router.old.quoted());
            }
        }
        splicer
    }

    /// A splicer that renames column qualifiers naming the old table: `rename(with_schema)` gives the new text.
    fn qualifiers_renamed(&self, rename: impl Fn(bool) -> Vec<u8>) -> Splicer<'_> {
        let mut splicer = Splicer::new(self.source.bytes());
        for mention in self.mentions {
            if let Mention::Qualifier { range, with_schema } = mention {
                if *with_schema || self.shape.write.is_some() {
                    splicer.replace(range.clone(), rename(*with_schema));
                }
            }
        }
        splicer
    }

    /// The write statement aimed at the extended table: the target and every column qualifier renamed, and a
    /// column list added to an INSERT without one.
    fn extended_write(&self, write: &Write) -> Result<Splicer<'_>, Unroutable> {
        let extended = &self.router.extended;
        let mut splicer = self.qualifiers_renamed(|with_schema| {
            if with_schema { extended.quoted() } else { format!("`{}`", extended.table()) }.into_bytes()
        });
        let target = self.mentions.iter().find_map(|m| match m {
            Mention::Table { range, .. } => Some(range.clone()),
            Mention::Qualifier { .. } => None,
        });
        let target = target.ok_or_else(|| Unroutable::new("the written table was not found"))?;
        splicer.replace(target, extended.quoted());
        if let Write::Insert { end, names_columns: false, .. } = write {
            let at = self.source.offset(*end);
            splicer.replace(at..at, rewrite::insert_columns());
        }
        Ok(splicer)
    }
}

#[cfg(test)]
mod tests;
