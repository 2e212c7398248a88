//! A read of both tables merged in the proxy, as [`crate::merge`] directs. Across two servers the statement runs
//! on the client's `edxapp` connection (old table) and on the `csmh` connection (extended table) at the same
//! time, and the rows are merged as they stream to the client. On one server both statements are sent together
//! on the client's connection, which answers them one after the other: the old side's result is held (up to
//! [`HELD_BYTES`]) while the extended side's streams.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use mysql_common::constants::CapabilityFlags;
use tracing::{debug, warn};

use super::{Flow, Session, SessionError};
use crate::backend;
use crate::merge::{ColumnDef, Merge, MergeError, MergePlan, Origin, Protocol, Step};
use crate::protocol::ProtocolError;
use crate::protocol::capabilities::Negotiated;
use crate::protocol::command::COM_QUERY;
use crate::protocol::frame::{self, MAX_PAYLOAD, PacketSpan};
use crate::protocol::packets::{self, MysqlError, OkFields, ResultHead, eof_status, ok_status};
use crate::protocol::response::Expect;
use crate::routing::{FanOut, MergeRead, Route};

/// Rows are written to the client in batches of about this many bytes.
const FLUSH_AT: usize = 16 * 1024;

/// On one server, the most of the old side's result the proxy holds while the extended side's streams; a larger
/// result is dropped and the read answered by the single `UNION ALL` statement instead.
const HELD_BYTES: usize = 4 * 1024 * 1024;

/// Where a merge reads each side's packets from.
enum Feeds {
    /// Two servers: the old side on the client's `edxapp` connection, the extended side on the `csmh` one.
    TwoConnections,
    /// One server: both sides on the client's connection, one after the other. The old side's packets, read
    /// ahead, are held here.
    Pipelined(VecDeque<Bytes>),
}

/// How one side's result begins.
enum Head {
    /// Column definitions of a result set.
    Columns(Vec<Bytes>),
    /// A result set whose column definitions the server left out, as it does for a prepared statement executed
    /// again under MariaDB's metadata caching: they are the ones it sent last time.
    KnownColumns,
    /// The side answered with an ERR packet (its payload).
    Failed(Bytes),
}

/// A side's packet while rows stream.
enum Packet {
    Row(Bytes),
    /// The end of the rows: warnings and status flags.
    End {
        warnings: u16,
        status: u16,
    },
    Failed(Bytes),
}

/// The column definitions each side of a prepared read of both tables sent last, for the executions whose
/// results leave them out (MariaDB's metadata caching): the merge needs them every time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KnownColumns([Option<Vec<Bytes>>; 2]);

impl KnownColumns {
    /// The definitions of a read's two statements, as their prepare answers gave them: the servers leave them
    /// out of the first execution's result already.
    pub(super) fn new(old: Vec<Bytes>, extended: Vec<Bytes>) -> KnownColumns {
        KnownColumns([Some(old), Some(extended)])
    }

    /// The definitions a side's result has: those it sent, remembered for next time, or those it sent last.
    fn resolve(&mut self, head: Head, origin: Origin) -> Result<Head, SessionError> {
        match head {
            Head::Columns(defs) => {
                self.0[index(origin)] = Some(defs.clone());
                Ok(Head::Columns(defs))
            }
            Head::KnownColumns => match &self.0[index(origin)] {
                Some(defs) => Ok(Head::Columns(defs.clone())),
                None => Err(SessionError::BackendProtocol(ProtocolError::Malformed("result without its columns"))),
            },
            failed => Ok(failed),
        }
    }
}

impl Session {
    /// Runs `read` on both servers and answers with the merged result.
    pub(super) async fn merge_read(
        &mut self,
        span: PacketSpan,
        read: MergeRead,
        extended: Vec<u8>,
    ) -> Result<Flow, SessionError> {
        let seq = span.last_seq.wrapping_add(1);
        let old = [&[COM_QUERY][..], &read.old].concat();
        let extended = [&[COM_QUERY][..], &extended].concat();
        let text = &mut KnownColumns::default();
        self.merge_commands(span, seq, (&old, &extended), &read.plan, Protocol::Text, text).await
    }

    /// Runs `read` on one server: both statements sent together on the client's connection, the old side's
    /// result held, the extended side's merged with it as it streams. A held result that would exceed
    /// [`HELD_BYTES`] is dropped, and the same read as one `UNION ALL` statement answers the client instead.
    pub(super) async fn merge_read_one_server(
        &mut self,
        span: PacketSpan,
        read: MergeRead,
    ) -> Result<Flow, SessionError> {
        let seq = span.last_seq.wrapping_add(1);
        // Kept to build the read as one statement, should the merge give up.
        let statement = super::statement_text(&self.client.buf, &span).into_owned();
        self.client.consume(span.wire_len);
        let mut both = BytesMut::new();
        for sql in [&read.old, &read.extended] {
            frame::write_packet(&mut both, 0, &[&[COM_QUERY][..], sql].concat());
        }
        self.backend.write_all(&both).await.map_err(SessionError::Backend)?;
        let Some(held) = self.hold_result(HELD_BYTES).await? else {
            debug!("the old side's result is too large to hold: reading both tables with one statement instead");
            let mut feeds = Feeds::Pipelined(VecDeque::new());
            if let Head::Columns(_) | Head::KnownColumns = self.head(&mut feeds, Origin::Extended).await? {
                self.drain_rows(&mut feeds, Origin::Extended, &mut [None, None]).await?;
            }
            return self.answer_with_union(seq, &statement).await;
        };
        let text = &mut KnownColumns::default();
        self.merge_heads(&mut Feeds::Pipelined(held), seq, &read.plan, Protocol::Text, Some(&statement), text).await
    }

    /// Answers the client's `statement` with the read of both tables as one `UNION ALL` statement on its
    /// connection.
    async fn answer_with_union(&mut self, seq: u8, statement: &[u8]) -> Result<Flow, SessionError> {
        let snapshot = std::sync::Arc::clone(self.pinned.as_ref().expect("routed by a snapshot"));
        match snapshot.router.route_prepared(statement) {
            Route::FanOut(FanOut::Union(sql)) => {
                self.send_to_backend(COM_QUERY, &sql).await?;
                self.relay_response(Expect::ResultSets).await?;
                Ok(Flow::Continue)
            }
            Route::Refuse(error) => self.answer_error(seq, &error).await,
            other => {
                warn!(route = ?other, "a read of both tables has no single-statement form");
                let error = MysqlError::new(1235, b"42000", "csmh-proxy cannot read both tables with this statement");
                self.answer_error(seq, &error).await
            }
        }
    }

    async fn answer_error(&mut self, seq: u8, error: &MysqlError) -> Result<Flow, SessionError> {
        let mut out = BytesMut::new();
        error.write_packet(&mut out, seq);
        self.flush(&mut out).await.map(|()| Flow::Continue)
    }

    /// Reads the whole result the client's connection is sending (a result set or an ERR) into memory, unless
    /// it is larger than `limit` bytes: then reads it to its end and returns `None`.
    async fn hold_result(&mut self, limit: usize) -> Result<Option<VecDeque<Bytes>>, SessionError> {
        let mut feeds = Feeds::TwoConnections;
        let mut held = VecDeque::new();
        match self.head(&mut feeds, Origin::Old).await? {
            Head::Failed(error) => {
                held.push_back(error);
                return Ok(Some(held));
            }
            Head::KnownColumns => {
                return Err(SessionError::BackendProtocol(ProtocolError::Malformed("text result without its columns")));
            }
            Head::Columns(defs) => {
                held.push_back(ResultHead::with_metadata(defs.len() as u64, self.caps.cache_metadata()).into());
                held.extend(defs);
                if !self.caps.deprecate_eof() {
                    held.push_back(eof_packet(0, self.status.bits()).into());
                }
            }
        }
        let mut size: usize = held.iter().map(Bytes::len).sum();
        loop {
            let packet = self.packet(&mut feeds, Origin::Old).await?;
            let last = matches!(self.classify_row(&packet), Packet::End { .. } | Packet::Failed(_));
            size += packet.len();
            held.push_back(packet);
            if last {
                return Ok(Some(held));
            }
            if size > limit {
                self.drain_rows(&mut feeds, Origin::Old, &mut [None, None]).await?;
                return Ok(None);
            }
        }
    }

    /// Sends the `old` command payload on `edxapp` and the `extended` one on the `csmh` connection, then answers
    /// the client with their results merged as `plan` says (`known`: the columns their statements sent last).
    pub(super) async fn merge_commands(
        &mut self,
        span: PacketSpan,
        seq: u8,
        (old, extended): (&[u8], &[u8]),
        plan: &MergePlan,
        protocol: Protocol,
        known: &mut KnownColumns,
    ) -> Result<Flow, SessionError> {
        if let Err(failure) = self.csmh_ready().await {
            return self.csmh_failed(span, failure).await;
        }
        self.client.consume(span.wire_len);
        backend::send_command(&mut self.backend, old[0], &old[1..]).await.map_err(SessionError::Backend)?;
        let csmh = self.csmh.as_mut().expect("made ready above");
        backend::send_command(&mut csmh.conn, extended[0], &extended[1..]).await.map_err(SessionError::Backend)?;
        self.merge_heads(&mut Feeds::TwoConnections, seq, plan, protocol, None, known).await
    }

    /// Reads both sides' column definitions and answers the client: with the merged rows, or with the error
    /// of a side that failed (after reading the other side to its end). When the columns' types do not allow
    /// an exact merge, the client gets an error, or on one server (given the client's `statement`) the answer
    /// of the read as one `UNION ALL` statement.
    async fn merge_heads(
        &mut self,
        feeds: &mut Feeds,
        seq: u8,
        plan: &MergePlan,
        protocol: Protocol,
        statement: Option<&[u8]>,
        known: &mut KnownColumns,
    ) -> Result<Flow, SessionError> {
        let old = self.head(feeds, Origin::Old).await?;
        let new = self.head(feeds, Origin::Extended).await?;
        let (old, new) = match (known.resolve(old, Origin::Old)?, known.resolve(new, Origin::Extended)?) {
            (Head::Columns(old), Head::Columns(new)) => (old, new),
            (Head::KnownColumns, _) | (_, Head::KnownColumns) => unreachable!("resolved above"),
            (Head::Failed(error), Head::Failed(_)) => return self.answer_raw(seq, &error).await,
            (Head::Failed(error), Head::Columns(_)) => {
                self.drain_rows(feeds, Origin::Extended, &mut [None, None]).await?;
                return self.answer_raw(seq, &error).await;
            }
            (Head::Columns(_), Head::Failed(error)) => {
                self.drain_rows(feeds, Origin::Old, &mut [None, None]).await?;
                return self.answer_raw(seq, &error).await;
            }
        };
        let merge = parse_defs(&old, Origin::Old, self.caps)
            .and_then(|o| parse_defs(&new, Origin::Extended, self.caps).map(|n| (o, n)))
            .and_then(|(o, n)| Merge::new(plan, protocol, &o, &n));
        let merge = match merge {
            Ok(merge) => merge,
            Err(error) => {
                self.drain_both(feeds).await?;
                if let Some(statement) = statement {
                    debug!(%error, "the merge cannot combine these columns: reading both tables with one statement");
                    return self.answer_with_union(seq, statement).await;
                }
                let error = merge_refusal(&error);
                return self.answer_raw(seq, &error).await;
            }
        };
        self.stream_merged(feeds, seq, merge, &new[..plan.visible_columns()]).await
    }

    /// Sends the column definitions, then the merged rows, then the end of the result.
    async fn stream_merged(
        &mut self,
        feeds: &mut Feeds,
        mut seq: u8,
        mut merge: Merge,
        defs: &[Bytes],
    ) -> Result<Flow, SessionError> {
        let mut out = BytesMut::new();
        // The definitions always follow, whether or not the client has them cached: it takes them either way.
        let head = ResultHead::with_metadata(defs.len() as u64, self.caps.cache_metadata());
        seq = frame::write_packet(&mut out, seq, &head);
        for def in defs {
            seq = frame::write_packet(&mut out, seq, def);
        }
        let deprecate_eof = self.caps.deprecate_eof();
        if !deprecate_eof {
            seq = frame::write_packet(&mut out, seq, &eof_packet(0, self.status.bits()));
        }
        let mut ends = [None, None];
        loop {
            let step = merge.step().map_err(|e| merge_failure(&e))?;
            match step {
                Step::Row(row) => {
                    seq = frame::write_packet(&mut out, seq, &row);
                    if out.len() >= FLUSH_AT {
                        self.flush(&mut out).await?;
                    }
                }
                Step::Read(origin) => match self.next_row(feeds, origin).await? {
                    Packet::Row(row) => merge.push(origin, row).map_err(|e| merge_failure(&e))?,
                    Packet::End { warnings, status } => {
                        ends[index(origin)] = Some((warnings, status));
                        merge.finish(origin).map_err(|e| merge_failure(&e))?;
                    }
                    Packet::Failed(error) => {
                        self.drain_rows(feeds, other(origin), &mut ends).await?;
                        frame::write_packet(&mut out, seq, &error);
                        return self.flush(&mut out).await.map(|()| Flow::Continue);
                    }
                },
                Step::Done => break,
            }
        }
        for origin in Origin::BOTH {
            self.drain_rows(feeds, origin, &mut ends).await?;
        }
        let warnings = ends.iter().flatten().fold(0u16, |sum, (w, _)| sum.saturating_add(*w));
        // The client's connection's status: on one server, as it stands after the later (extended) statement.
        let last_on_client_connection = match feeds {
            Feeds::TwoConnections => Origin::Old,
            Feeds::Pipelined(_) => Origin::Extended,
        };
        let status = ends[index(last_on_client_connection)].map_or(self.status.bits(), |(_, s)| s);
        self.status = mysql_common::constants::StatusFlags::from_bits_truncate(status);
        if deprecate_eof {
            let end = OkFields { affected_rows: 0, last_insert_id: 0, status, warnings };
            let session_track = self.caps.flags().contains(CapabilityFlags::CLIENT_SESSION_TRACK);
            end.write_end_of_rows(&mut out, seq, session_track);
        } else {
            frame::write_packet(&mut out, seq, &eof_packet(warnings, status));
        }
        self.flush(&mut out).await.map(|()| Flow::Continue)
    }

    async fn flush(&mut self, out: &mut BytesMut) -> Result<(), SessionError> {
        self.answer_seq = None;
        self.client.write_all(out).await.map_err(SessionError::Client)?;
        out.clear();
        Ok(())
    }

    /// Answers the client with a packet of the proxy's making (an ERR).
    pub(super) async fn answer_raw(&mut self, seq: u8, payload: &[u8]) -> Result<Flow, SessionError> {
        let mut out = BytesMut::new();
        frame::write_packet(&mut out, seq, payload);
        self.flush(&mut out).await.map(|()| Flow::Continue)
    }

    /// The next packet of a side.
    async fn packet(&mut self, feeds: &mut Feeds, origin: Origin) -> Result<Bytes, SessionError> {
        let conn = match (feeds, origin) {
            (Feeds::Pipelined(held), Origin::Old) => {
                return held.pop_front().ok_or(SessionError::BackendProtocol(ProtocolError::Malformed("result")));
            }
            (Feeds::Pipelined(_), Origin::Extended) | (Feeds::TwoConnections, Origin::Old) => &mut self.backend,
            (Feeds::TwoConnections, Origin::Extended) => {
                &mut self.csmh.as_mut().expect("the csmh connection is open").conn
            }
        };
        let span = conn.next_packet().await.map_err(SessionError::Backend)?;
        let span = span.ok_or_else(|| SessionError::Backend(std::io::ErrorKind::UnexpectedEof.into()))?;
        let wire = conn.buf.split_to(span.wire_len).freeze();
        Ok(frame::payload(wire, &span))
    }

    /// Reads a side's column count and definitions (and the EOF after them), or its ERR.
    async fn head(&mut self, feeds: &mut Feeds, origin: Origin) -> Result<Head, SessionError> {
        let first = self.packet(feeds, origin).await?;
        match first.first() {
            Some(0xFF) => return Ok(Head::Failed(first)),
            Some(0x00) => return Err(SessionError::BackendProtocol(ProtocolError::Malformed("result set (got OK)"))),
            _ => {}
        }
        let head = ResultHead::parse(&first, self.caps.cache_metadata())
            .ok_or(SessionError::BackendProtocol(ProtocolError::Malformed("column count")))?;
        let mut defs = Vec::new();
        if head.metadata_follows {
            for _ in 0..head.columns {
                defs.push(self.packet(feeds, origin).await?);
            }
        }
        if !self.caps.deprecate_eof() {
            self.packet(feeds, origin).await?;
        }
        Ok(if head.metadata_follows { Head::Columns(defs) } else { Head::KnownColumns })
    }

    async fn next_row(&mut self, feeds: &mut Feeds, origin: Origin) -> Result<Packet, SessionError> {
        let packet = self.packet(feeds, origin).await?;
        Ok(self.classify_row(&packet))
    }

    /// What a packet after the column definitions is: a row, the end of the rows, or an error.
    fn classify_row(&self, packet: &Bytes) -> Packet {
        match packet.first() {
            Some(0xFF) => Packet::Failed(packet.clone()),
            Some(0xFE) if packet.len() < MAX_PAYLOAD => {
                let status = if self.caps.deprecate_eof() { ok_status(packet) } else { eof_status(packet) };
                let warnings = self.end_warnings(packet);
                Packet::End { warnings, status: status.unwrap_or(0) }
            }
            _ => Packet::Row(packet.clone()),
        }
    }

    fn end_warnings(&self, packet: &[u8]) -> u16 {
        if self.caps.deprecate_eof() {
            OkFields::parse_end_of_rows(packet, self.caps.flags()).map_or(0, |ok| ok.warnings)
        } else {
            packet.get(1..3).map_or(0, |w| u16::from_le_bytes([w[0], w[1]]))
        }
    }

    /// Reads and drops what remains of a side's rows, keeping its end.
    async fn drain_rows(
        &mut self,
        feeds: &mut Feeds,
        origin: Origin,
        ends: &mut [Option<(u16, u16)>; 2],
    ) -> Result<(), SessionError> {
        while ends[index(origin)].is_none() {
            match self.next_row(feeds, origin).await? {
                Packet::Row(_) => {}
                Packet::End { warnings, status } => ends[index(origin)] = Some((warnings, status)),
                Packet::Failed(_) => ends[index(origin)] = Some((0, 0)),
            }
        }
        Ok(())
    }

    /// Reads and drops both sides' whole results, after their heads.
    async fn drain_both(&mut self, feeds: &mut Feeds) -> Result<(), SessionError> {
        let mut ends = [None, None];
        for origin in Origin::BOTH {
            self.drain_rows(feeds, origin, &mut ends).await?;
        }
        Ok(())
    }
}

fn index(origin: Origin) -> usize {
    match origin {
        Origin::Old => 0,
        Origin::Extended => 1,
    }
}

fn other(origin: Origin) -> Origin {
    match origin {
        Origin::Old => Origin::Extended,
        Origin::Extended => Origin::Old,
    }
}

/// The column definitions of one side's result, as the merge reads them.
fn parse_defs(defs: &[Bytes], origin: Origin, caps: Negotiated) -> Result<Vec<ColumnDef>, MergeError> {
    let parse = |def: &Bytes| match packets::standard_column_definition(def, caps.extended_metadata()) {
        Some(def) => ColumnDef::parse(&def, origin),
        None => Err(MergeError::ColumnDefinition { origin }),
    };
    defs.iter().map(parse).collect()
}

/// A classic EOF packet's payload.
fn eof_packet(warnings: u16, status: u16) -> Vec<u8> {
    let mut payload = vec![0xFE];
    payload.extend_from_slice(&warnings.to_le_bytes());
    payload.extend_from_slice(&status.to_le_bytes());
    payload
}

/// The ERR payload for a read the merge cannot answer exactly.
fn merge_refusal(error: &MergeError) -> Vec<u8> {
    let error =
        MysqlError::new(1235, b"42000", format!("csmh-proxy cannot merge this read across two servers: {error}"));
    let mut out = BytesMut::new();
    error.write_packet(&mut out, 0);
    out[frame::HEADER_LEN..].to_vec()
}

/// A merge that fails once rows have started: the result cannot be finished, so the connection ends.
fn merge_failure(error: &MergeError) -> SessionError {
    warn!(%error, "a merged read failed in the middle of its rows");
    SessionError::BackendProtocol(ProtocolError::Unsupported("a merged read failed in the middle of its rows"))
}
