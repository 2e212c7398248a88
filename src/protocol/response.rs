//! Where a server's response ends.
//!
//! The relay copies a response to the client as its bytes arrive; [`ResponseScanner`] walks the frames just far
//! enough to know when the response is over (or when it is the client's turn to send something), reading only
//! each packet's first bytes: the header byte, a column count, the status word of the final OK or EOF. Row and
//! column packets are never decoded.

use mysql_common::constants::StatusFlags;

use super::ProtocolError;
use super::capabilities::Negotiated;
use super::errors::ERR_HEADER;
use super::frame::{HEADER_LEN, Header};
use super::packets::{FAST_AUTH_OK, PrepareOk, ResultHead, ends_rows, eof_status, is_progress_report, ok_status};

/// The shape of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One or more results (OK, ERR, result sets, LOCAL INFILE requests): COM_QUERY, COM_STMT_EXECUTE.
    ResultSets,
    /// A COM_STMT_EXECUTE that asked for a cursor: like [`Expect::ResultSets`], except that a result whose
    /// column definitions end with an EOF carrying `SERVER_STATUS_CURSOR_EXISTS` (and no further result) ends
    /// there: its rows come later, by COM_STMT_FETCH. Only such a request may end that way: MariaDB also sets the
    /// flag in the results of a statement whose stored program has a cursor of its own open.
    Cursor,
    /// COM_STMT_PREPARE: an OK with parameter and column definitions, or ERR.
    Prepare,
    /// COM_STMT_FETCH: rows and a final EOF/OK, or ERR.
    Rows,
    /// COM_FIELD_LIST: column definitions and a final EOF/OK, or ERR.
    FieldList,
    /// A single packet of any kind.
    OnePacket,
    /// An authentication exchange (handshake, COM_CHANGE_USER) that ends with OK or ERR.
    Auth,
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The last packet was not an ERR.
    Ok,
    /// The last packet was an ERR.
    Err,
}

/// What the client must send before the server goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTurn {
    /// The server asked for a LOCAL INFILE: file contents follow, ended by an empty packet.
    LocalInfile,
    /// The server asked for the next packet of an authentication exchange.
    Auth,
}

/// What the scan of the bytes so far says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The response goes on: read more from the server.
    NeedMore,
    /// The client must send something; then the response goes on.
    ClientTurn(ClientTurn),
    /// The response is complete.
    Done(End),
}

/// What follows a run of column (or parameter) definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterDefs {
    /// Rows of a result set.
    Rows,
    /// A prepared statement's column definitions, after its parameter definitions.
    PrepareColumns(u16),
    /// Nothing: the response ends.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ResultStart,
    Defs { left: u64, then: AfterDefs },
    DefsEof { then: AfterDefs },
    Rows,
    PrepareStart,
    FieldList,
    OnePacket,
    Auth,
}

/// How many bytes of a packet the scanner needs to see to classify it: enough for an OK packet's status word
/// behind two 9-byte length-encoded integers.
const PEEK: usize = 32;

const OK: u8 = 0x00;
const LOCAL_INFILE: u8 = 0xFB;

/// Follows one response frame by frame.
#[derive(Debug)]
pub struct ResponseScanner {
    state: State,
    deprecate_eof: bool,
    /// A result's column count is followed by a byte saying whether its definitions follow.
    cache_metadata: bool,
    /// The request asked for a cursor ([`Expect::Cursor`]).
    cursor: bool,
    /// Payload bytes of the current frame not yet passed over.
    frame_left: usize,
    /// The current packet continues in another frame.
    continues: bool,
    /// What to report once the current packet has passed.
    pending: Option<Progress>,
    /// Status flags of the last OK or EOF seen.
    status: Option<StatusFlags>,
    /// Error code of the ERR packet that ended the response.
    error: Option<u16>,
    /// The prepare OK passed, in the answer to a COM_STMT_PREPARE.
    prepared: Option<PrepareOk>,
}

impl ResponseScanner {
    /// A scanner for a response of shape `expect` on a connection that negotiated `caps`.
    pub fn new(expect: Expect, caps: Negotiated) -> ResponseScanner {
        let state = match expect {
            Expect::ResultSets | Expect::Cursor => State::ResultStart,
            Expect::Prepare => State::PrepareStart,
            Expect::Rows => State::Rows,
            Expect::FieldList => State::FieldList,
            Expect::OnePacket => State::OnePacket,
            Expect::Auth => State::Auth,
        };
        ResponseScanner {
            state,
            deprecate_eof: caps.deprecate_eof(),
            cache_metadata: caps.cache_metadata(),
            cursor: expect == Expect::Cursor,
            frame_left: 0,
            continues: false,
            pending: None,
            status: None,
            error: None,
            prepared: None,
        }
    }

    /// Status flags of the last OK or EOF packet passed, if any.
    pub fn status(&self) -> Option<StatusFlags> {
        self.status
    }

    /// The error code of the ERR packet that ended the response, if one did.
    pub fn error_code(&self) -> Option<u16> {
        self.error
    }

    /// The prepare OK passed (the statement's id and parameter count), if the response was a COM_STMT_PREPARE's
    /// and the statement was prepared.
    pub fn prepared_statement(&self) -> Option<PrepareOk> {
        self.prepared
    }

    /// Passes over the frames in `buf`, returning how many bytes may be relayed now and what comes next.
    ///
    /// Bytes are returned as soon as they are known to belong to this response, so a row larger than any buffer
    /// streams through. Call again with the unrelayed rest and more bytes until it says the response is done.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, Progress), ProtocolError> {
        let mut pos = 0;
        loop {
            if self.frame_left > 0 {
                let take = self.frame_left.min(buf.len() - pos);
                pos += take;
                self.frame_left -= take;
                if self.frame_left > 0 {
                    return Ok((pos, Progress::NeedMore));
                }
            }
            if !self.continues {
                if let Some(progress) = self.pending.take() {
                    return Ok((pos, progress));
                }
            }
            let Some(header) = Header::parse(&buf[pos..]) else {
                return Ok((pos, Progress::NeedMore));
            };
            if !self.continues {
                let body = &buf[pos + HEADER_LEN..];
                let peek = header.len.min(PEEK);
                if body.len() < peek {
                    return Ok((pos, Progress::NeedMore));
                }
                self.pending = self.on_packet(&body[..peek], header.len)?;
            }
            self.continues = header.continues();
            self.frame_left = header.len;
            pos += HEADER_LEN;
        }
    }

    /// Advances the state machine over one packet, given its first bytes and its length.
    fn on_packet(&mut self, head: &[u8], len: usize) -> Result<Option<Progress>, ProtocolError> {
        let first = head.first().copied();
        let is_err = first == Some(ERR_HEADER);
        let is_end = ends_rows(first, len);
        let progress = match self.state {
            // MariaDB's progress report (MARIADB_CLIENT_PROGRESS) looks like an ERR but the response goes on.
            _ if is_progress_report(head) => None,
            _ if is_err => {
                self.error = head.get(1..3).map(|code| u16::from_le_bytes([code[0], code[1]]));
                Some(Progress::Done(End::Err))
            }
            State::ResultStart => self.on_result_start(head)?,
            State::Defs { left, then } => {
                let left = left - 1;
                if left > 0 {
                    self.state = State::Defs { left, then };
                    None
                } else if self.deprecate_eof {
                    self.after_defs(then)
                } else {
                    self.state = State::DefsEof { then };
                    None
                }
            }
            State::DefsEof { then } => {
                let status = self.record(eof_status(head), "EOF")?;
                if then == AfterDefs::Rows && self.opened_cursor(status) {
                    Some(Progress::Done(End::Ok))
                } else {
                    self.after_defs(then)
                }
            }
            State::Rows if is_end => {
                let status = self.record(self.end_status(head), "end of rows")?;
                self.more_results_or_done(status)
            }
            State::Rows => None,
            State::PrepareStart => self.on_prepare_ok(head)?,
            State::FieldList if is_end => Some(Progress::Done(End::Ok)),
            State::FieldList => None,
            State::OnePacket => {
                self.note_ok_status(first, head);
                Some(Progress::Done(End::Ok))
            }
            State::Auth => Some(match first {
                Some(OK) => {
                    // A change of user or a login starts the session afresh: autocommit as the server says.
                    self.note_ok_status(first, head);
                    Progress::Done(End::Ok)
                }
                _ if head == FAST_AUTH_OK && len == 2 => return Ok(None),
                _ => Progress::ClientTurn(ClientTurn::Auth),
            }),
        };
        Ok(progress)
    }

    fn on_result_start(&mut self, head: &[u8]) -> Result<Option<Progress>, ProtocolError> {
        match head.first() {
            Some(&OK) => {
                let status = self.record(ok_status(head), "OK")?;
                Ok(self.more_results_or_done(status))
            }
            Some(&LOCAL_INFILE) => Ok(Some(Progress::ClientTurn(ClientTurn::LocalInfile))),
            _ => {
                let result =
                    ResultHead::parse(head, self.cache_metadata).ok_or(ProtocolError::Malformed("column count"))?;
                self.state = match result {
                    ResultHead { metadata_follows: true, columns } => {
                        State::Defs { left: columns, then: AfterDefs::Rows }
                    }
                    // Definitions left out (the client has them): under classic EOF their EOF still comes.
                    _ if self.deprecate_eof => State::Rows,
                    _ => State::DefsEof { then: AfterDefs::Rows },
                };
                Ok(None)
            }
        }
    }

    fn on_prepare_ok(&mut self, head: &[u8]) -> Result<Option<Progress>, ProtocolError> {
        let prepared = PrepareOk::parse(head).ok_or(ProtocolError::Malformed("prepare OK"))?;
        self.prepared = Some(prepared);
        let PrepareOk { columns, params, .. } = prepared;
        Ok(if params > 0 {
            self.state = State::Defs { left: params.into(), then: AfterDefs::PrepareColumns(columns) };
            None
        } else {
            self.after_defs(AfterDefs::PrepareColumns(columns))
        })
    }

    fn after_defs(&mut self, then: AfterDefs) -> Option<Progress> {
        match then {
            AfterDefs::Rows => {
                self.state = State::Rows;
                None
            }
            AfterDefs::PrepareColumns(0) | AfterDefs::End => Some(Progress::Done(End::Ok)),
            AfterDefs::PrepareColumns(columns) => {
                self.state = State::Defs { left: columns.into(), then: AfterDefs::End };
                None
            }
        }
    }

    /// Whether the EOF after a result's column definitions, with `status`, says the server opened the cursor the
    /// request asked for. A statement that runs in a stored program (a prepared CALL) sends its results with
    /// SERVER_MORE_RESULTS_EXISTS, and those rows follow whatever cursor its program holds open.
    fn opened_cursor(&self, status: StatusFlags) -> bool {
        self.cursor
            && status.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
            && !status.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
    }

    fn more_results_or_done(&mut self, status: StatusFlags) -> Option<Progress> {
        if status.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS) {
            self.state = State::ResultStart;
            None
        } else {
            Some(Progress::Done(End::Ok))
        }
    }

    fn end_status(&self, head: &[u8]) -> Option<u16> {
        if self.deprecate_eof { ok_status(head) } else { eof_status(head) }
    }

    /// Keeps the status flags of a one-packet answer when it is an OK (COM_RESET_CONNECTION's ends the
    /// transaction, for one).
    fn note_ok_status(&mut self, first: Option<u8>, head: &[u8]) {
        if let (Some(OK), Some(status)) = (first, ok_status(head)) {
            self.status = Some(StatusFlags::from_bits_truncate(status));
        }
    }

    fn record(&mut self, status: Option<u16>, what: &'static str) -> Result<StatusFlags, ProtocolError> {
        let status = StatusFlags::from_bits_truncate(status.ok_or(ProtocolError::Malformed(what))?);
        self.status = Some(status);
        Ok(status)
    }
}

#[cfg(test)]
mod tests;
