//! The session's registry of the prepared statements the proxy handles itself: those with a twin on the
//! extended table (a shadow the client never sees), and those prepared on the `csmh` connection (known to the
//! client by an id of the proxy's with [`CSMH_STATEMENT`] set). A command on a prepared statement is looked up
//! here, beside the router's decision for statements. What lives on the `csmh` server lives as long as the
//! connection it was prepared on: after that connection failed, the statement is lost, never confused with one
//! of the same server id on the next connection. It also knows which statement the client prepared last, which
//! MariaDB lets a command name by [`LAST_STATEMENT_ID`] (see [`Statements::resolve`]).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::merge::{MergePlan, Origin};
use crate::protocol::command::{COM_STMT_CLOSE, Command, LAST_STATEMENT_ID};
use crate::routing::Rights;
use crate::topology::Server;

/// The bit set in the ids of statements prepared on the `csmh` connection, as the client sees them. Servers
/// number a connection's statements from 1, so the client's own statements on `edxapp` never have it.
const CSMH_STATEMENT: u32 = 0x8000_0000;

/// What a command on a prepared statement is, as the registry knows it.
pub(super) enum Registered {
    /// A client statement on the old table with a shadow on the extended one.
    Twin(Shadow),
    /// A statement prepared on the `csmh` connection, with the id the `csmh` server knows it by.
    OnCsmh {
        /// Its id on the `csmh` connection.
        id: u32,
        /// What the client's rights are checked with before it executes.
        grants: GrantCheck,
    },
    /// A statement that lived on, or had a shadow on, a `csmh` connection that has failed since.
    Lost {
        /// The id the client knows it by.
        id: u32,
    },
    /// [`LAST_STATEMENT_ID`] while there is no last statement: the client's last prepare failed, or it closed
    /// that statement since (or reset its session).
    NoLastStatement,
}

/// What the client's rights on the old table are checked with before a statement prepared on the `csmh`
/// connection executes there, as at its prepare: the server checks a client's rights at every execution, so the
/// proxy does too (a remembered verdict stands for `[backends.csmh] grants_valid_secs`), and a REVOKE reaches a statement
/// prepared before it as it reaches text statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GrantCheck {
    /// The rights on the old table the statement needs.
    pub rights: Rights,
    /// The statement as the client wrote it, with the old table named with its schema, to prepare on `edxapp`.
    pub check: Arc<[u8]>,
}

/// A statement prepared on a `csmh` connection.
#[derive(Debug, Clone)]
struct OnCsmh {
    /// The `csmh` connection's number (`CsmhLink::connection_number`).
    connection: u64,
    /// Its id there.
    id: u32,
    /// What the client's rights are checked with before it executes.
    grants: GrantCheck,
}

/// The extended-table twin of a client's prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shadow {
    /// The client's statement's id (on `edxapp`).
    pub own: u32,
    /// The connection the shadow is prepared on.
    pub server: Server,
    /// For a shadow on the `csmh` connection, that connection's number (`CsmhLink::connection_number`).
    pub csmh_connection: Option<u64>,
    /// Its id there.
    pub id: u32,
    /// What executing the pair does.
    pub twin: Twin,
}

/// What executing a statement and its shadow does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Twin {
    /// Both write; the client gets the summed OK.
    Write,
    /// Both read (two servers); the client gets the rows merged as the plan says.
    Merge {
        /// How the two results merge.
        plan: Box<MergePlan>,
        /// The column definitions each side sent last.
        known: KnownColumns,
    },
}

/// The column definitions each side of a prepared read of both tables sent last, for the executions whose
/// results leave them out (MariaDB's metadata caching): the merge needs them every time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KnownColumns([Option<Vec<Bytes>>; 2]);

impl KnownColumns {
    /// The definitions of a read's two statements, as their prepare answers gave them: the servers leave them
    /// out of the first execution's result already.
    pub fn new(old: Vec<Bytes>, extended: Vec<Bytes>) -> KnownColumns {
        KnownColumns([Some(old), Some(extended)])
    }

    /// The definitions `origin` sent last, if any.
    pub fn get(&self, origin: Origin) -> Option<&Vec<Bytes>> {
        self.0[origin.index()].as_ref()
    }

    /// Remembers the definitions `origin` sent.
    pub fn remember(&mut self, origin: Origin, defs: &[Bytes]) {
        self.0[origin.index()] = Some(defs.to_vec());
    }
}

/// The statements of one session the proxy handles itself.
#[derive(Default)]
pub(super) struct Statements {
    /// Shadows, by the id the client knows its statement by.
    shadows: HashMap<u32, Shadow>,
    /// Statements prepared on the `csmh` connection, by the id the client knows them by.
    on_csmh: HashMap<u32, OnCsmh>,
    /// The last id given to a statement prepared on the `csmh` connection, without [`CSMH_STATEMENT`].
    last_csmh_id: u32,
    /// The statement the client prepared last, while it is open.
    last_prepared: Option<LastPrepared>,
}

/// The statement a client prepared last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LastPrepared {
    /// The id the client knows it by.
    id: u32,
    /// How many parameters it takes.
    params: u16,
}

impl Statements {
    /// Notes that the client sends a COM_STMT_PREPARE: until its answer gives the client a statement, there is no
    /// last statement, as MariaDB forgets it when a prepare fails.
    pub fn preparing(&mut self) {
        self.last_prepared = None;
    }

    /// Notes the statement a COM_STMT_PREPARE gave the client: the id the client knows it by, and how many
    /// parameters it takes.
    pub fn prepared(&mut self, id: u32, params: u16) {
        self.last_prepared = Some(LastPrepared { id, params });
    }

    /// How many parameters the statement the client prepared last takes, if there is one.
    pub fn last_parameters(&self) -> Option<u16> {
        self.last_prepared.map(|last| last.params)
    }

    /// The statement a `command` naming statement `id` is about, by the id the client knows it by: `id` itself,
    /// or for [`LAST_STATEMENT_ID`] the statement the client prepared last, as MariaDB reads that id; `None` when
    /// there is no such statement. Closing the last statement leaves none, as on MariaDB.
    ///
    /// The proxy cannot let a server read the id itself: a server's last statement may be one the proxy prepared
    /// there for itself (a grant check, a shadow), and a statement the proxy prepared on the `csmh` server is
    /// not the last one of the client's own connection.
    pub fn resolve(&mut self, command: Command, id: u32) -> Option<u32> {
        let id = if id == LAST_STATEMENT_ID { self.last_prepared?.id } else { id };
        if command == Command::Relayed(COM_STMT_CLOSE) && self.last_prepared.is_some_and(|last| last.id == id) {
            self.last_prepared = None;
        }
        Some(id)
    }

    /// What the statement `id` a command names is, if the proxy handles it itself; `csmh_connection` is the
    /// number of the `csmh` connection open now, if any, which its statements must have been prepared on.
    pub fn lookup(&self, id: u32, csmh_connection: Option<u64>) -> Option<Registered> {
        if let Some(shadow) = self.shadows.get(&id) {
            return Some(match shadow.server {
                Server::Csmh if shadow.csmh_connection != csmh_connection => Registered::Lost { id },
                _ => Registered::Twin(shadow.clone()),
            });
        }
        let statement = self.on_csmh.get(&id)?;
        Some(match Some(statement.connection) == csmh_connection {
            true => Registered::OnCsmh { id: statement.id, grants: statement.grants.clone() },
            false => Registered::Lost { id },
        })
    }

    /// Registers a statement the `csmh` connection numbered `connection` prepared as `csmh_id`, whose executions
    /// check the client's rights with `grants`; the id the client knows it by.
    pub fn insert_on_csmh(&mut self, connection: u64, csmh_id: u32, grants: GrantCheck) -> u32 {
        // Ids are not reused before 2^31 prepares in one session; one still in use is skipped, and so is the id
        // that names the last statement prepared.
        loop {
            self.last_csmh_id = self.last_csmh_id.wrapping_add(1) & !CSMH_STATEMENT;
            let id = self.last_csmh_id | CSMH_STATEMENT;
            if self.last_csmh_id != 0 && id != LAST_STATEMENT_ID && !self.on_csmh.contains_key(&id) {
                self.on_csmh.insert(id, OnCsmh { connection, id: csmh_id, grants });
                return id;
            }
        }
    }

    /// Registers a client statement's shadow.
    pub fn insert(&mut self, shadow: Shadow) {
        self.shadows.insert(shadow.own, shadow);
    }

    /// Forgets a client statement the proxy handles itself (the client closed it).
    pub fn remove(&mut self, own: u32) {
        self.shadows.remove(&own);
        self.on_csmh.remove(&own);
    }

    /// Keeps the column definitions a merged execution of `own` last saw.
    pub fn remember_columns(&mut self, own: u32, columns: KnownColumns) {
        if let Some(Shadow { twin: Twin::Merge { known, .. }, .. }) = self.shadows.get_mut(&own) {
            *known = columns;
        }
    }

    /// Forgets every statement: the server forgot them (COM_CHANGE_USER, COM_RESET_CONNECTION); their shadows
    /// are left to the connection.
    pub fn forget_all(&mut self) {
        self.shadows.clear();
        self.on_csmh.clear();
        self.last_prepared = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXECUTE: Command = Command::StmtExecute { cursor: false };
    const CLOSE: Command = Command::Relayed(COM_STMT_CLOSE);

    #[test]
    fn the_last_statement_is_the_last_prepared_until_a_prepare_fails_or_it_is_closed() {
        let mut statements = Statements::default();
        assert_eq!(statements.resolve(EXECUTE, LAST_STATEMENT_ID), None, "nothing prepared yet");
        assert_eq!(statements.resolve(EXECUTE, 7), Some(7));
        statements.prepared(7, 0);
        statements.prepared(8, 2);
        assert_eq!(statements.resolve(EXECUTE, LAST_STATEMENT_ID), Some(8));
        assert_eq!(statements.last_parameters(), Some(2));
        assert_eq!(statements.resolve(CLOSE, 7), Some(7));
        assert_eq!(statements.resolve(EXECUTE, LAST_STATEMENT_ID), Some(8), "closing another one keeps it");
        assert_eq!(statements.resolve(CLOSE, LAST_STATEMENT_ID), Some(8));
        assert_eq!(statements.resolve(EXECUTE, LAST_STATEMENT_ID), None, "closed");
        statements.prepared(9, 0);
        assert_eq!(statements.resolve(CLOSE, 9), Some(9));
        assert_eq!(statements.resolve(EXECUTE, LAST_STATEMENT_ID), None, "closed by its own id");
        statements.prepared(10, 0);
        statements.preparing();
        assert_eq!(statements.resolve(EXECUTE, LAST_STATEMENT_ID), None, "the last prepare failed");
        statements.prepared(11, 0);
        statements.forget_all();
        assert_eq!(statements.resolve(EXECUTE, LAST_STATEMENT_ID), None, "the session was reset");
    }

    #[test]
    fn no_statement_on_the_csmh_server_is_given_the_id_of_the_last() {
        let mut statements = Statements { last_csmh_id: 0x7FFF_FFFD, ..Statements::default() };
        let grants = GrantCheck { rights: Rights::INSERT, check: Arc::from(&b"INSERT"[..]) };
        assert_eq!(statements.insert_on_csmh(1, 1, grants.clone()), 0xFFFF_FFFE);
        assert_eq!(statements.insert_on_csmh(1, 2, grants), CSMH_STATEMENT | 1, "0xFFFFFFFF is skipped");
    }
}
