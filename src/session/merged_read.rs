//! A read of both tables merged in the proxy, as [`crate::merge`] directs. Across two servers the statement runs
//! on the client's `edxapp` connection (old table) and on the `csmh` connection (extended table) at the same
//! time, and the rows are merged as they stream to the client. On one server both statements are sent together
//! on the client's connection, which answers them one after the other: the old side's result is held (up to
//! [`HELD_BYTES`]) while the extended side's streams; when the merge gives up, the route's `UNION ALL` form of
//! the read answers instead.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use super::error::SessionError;
use super::request::Request;
use super::statements::KnownColumns;
use super::{Flow, Session};
use crate::merge::{ColumnDef, Merge, MergeError, MergePlan, Origin, Protocol, Step};
use crate::protocol::ProtocolError;
use crate::protocol::capabilities::Negotiated;
use crate::protocol::command::{COM_QUERY, body as command_body, command_payload};
use crate::protocol::errors::{MysqlError, is_err_packet};
use crate::protocol::frame;
use crate::protocol::packets::{self, ResultHead, RowPacket, is_ok_packet};
use crate::routing::{MergeRead, MergeServers};
use crate::shadow::Capture;
use crate::state::ConfigSnapshot;
use crate::topology::Server;

/// Rows are written to the client in batches of about this many bytes.
const FLUSH_AT: usize = 16 * 1024;

/// On one server, the most of the old side's result the proxy holds while the extended side's streams; a larger
/// result is dropped and the read answered by the single `UNION ALL` statement instead.
const HELD_BYTES: usize = 4 * 1024 * 1024;

/// Where a merge reads each side's packets from.
enum Feeds {
    /// Each side from the connection it runs on: across two servers, the old side on the client's `edxapp`
    /// connection and the extended side on the `csmh` one (and, while its result is read ahead on one server,
    /// the old side on the client's connection).
    Connections,
    /// On one server: the old side's packets, read ahead and held here; the extended side's on the client's
    /// connection, which answers it after the old side's.
    OldSideHeld(VecDeque<Bytes>),
}

/// How a merged read's two results are combined, and who else sees the rows.
pub(super) struct Merging<'a> {
    /// The merge the router planned.
    pub plan: &'a MergePlan,
    /// The protocol both sides answer in.
    pub protocol: Protocol,
    /// The column definitions the statements sent last (for a prepared statement whose result may leave them out).
    pub known: &'a mut KnownColumns,
    /// A sampled read keeps the rows the client gets here, to compare them with the extended table alone.
    pub capture: Option<&'a mut Capture>,
}

/// How a merged read ended, when it did not fail.
enum Merged {
    /// The client has its answer.
    Answered,
    /// The merge cannot combine the two sides' columns (on one server: the union answers instead).
    GaveUp,
}

/// A side's result, once its column definitions are known.
enum Resolved {
    /// Column definitions of a result set.
    Columns(Vec<Bytes>),
    /// The side answered with an ERR packet (its payload).
    Failed(Bytes),
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

impl Session {
    /// Carries out a merged read in the text protocol, where its route says it runs.
    pub(super) async fn merged_read(&mut self, request: &mut Request, read: MergeRead) -> Result<Flow, SessionError> {
        let MergeRead { old, extended, plan, servers } = read;
        let mut capture = self.shadow_capture(request);
        let known = &mut KnownColumns::default();
        let merging = Merging { plan: &plan, protocol: Protocol::Text, known, capture: capture.as_mut() };
        let flow = match servers {
            MergeServers::OneServer { union } => {
                self.merge_on_one_server(request, &old, &extended, merging, union).await
            }
            MergeServers::TwoServers { inline, .. } => match self.with_values(extended, &inline).await? {
                Ok(extended) => self.merge_commands(request, COM_QUERY, (&old, &extended), merging).await,
                Err(error) => self.answer_error(request, error).await,
            },
        };
        if let Some(capture) = capture {
            self.submit_shadow(capture, &request.snapshot);
        }
        flow
    }

    /// A capture of this read's answer when `[shadow]` samples it: the statement that reads the extended table
    /// alone, as the next stage would, is found now, while the client's statement is still in the buffer.
    fn shadow_capture(&self, request: &Request) -> Option<Capture> {
        let plan = request.snapshot.shadow.as_ref()?;
        if !self.shared.shadow.samples_next(plan.sample) {
            return None;
        }
        let payload = request.span.payload_in(&self.client.buf);
        let statement = plan.statement(command_body(&payload));
        if statement.is_none() {
            self.shared.shadow.skipped();
        }
        statement.map(Capture::new)
    }

    /// Hands a finished capture to the shadow worker; one that cannot be compared is counted as skipped.
    fn submit_shadow(&self, capture: Capture, snapshot: &Arc<ConfigSnapshot>) {
        match capture.into_sample(Arc::clone(snapshot)) {
            Some(sample) => self.shared.shadow.submit(sample),
            None => self.shared.shadow.skipped(),
        }
    }

    /// Runs a read on one server: both statements sent together on the client's connection, the old side's
    /// result held, the extended side's merged with it as it streams. A held result that would exceed
    /// [`HELD_BYTES`], or columns the merge cannot combine, leave the answer to `union`.
    async fn merge_on_one_server(
        &mut self,
        request: &mut Request,
        old: &[u8],
        extended: &[u8],
        merging: Merging<'_>,
        union: Result<Vec<u8>, MysqlError>,
    ) -> Result<Flow, SessionError> {
        self.consume_request(request);
        let mut both = BytesMut::new();
        for sql in [old, extended] {
            frame::write_packet(&mut both, 0, &command_payload(COM_QUERY, sql));
        }
        self.edxapp.conn.write_all(&both).await.map_err(SessionError::Backend)?;
        let Some(held) = self.hold_result(HELD_BYTES).await? else {
            debug!("the old side's result is too large to hold: reading both tables with one statement instead");
            let mut feeds = Feeds::OldSideHeld(VecDeque::new());
            if let Head::Columns(_) | Head::KnownColumns = self.head(&mut feeds, Origin::Extended).await? {
                self.drain_rows(&mut feeds, Origin::Extended, &mut [None, None]).await?;
            }
            return self.answer_with_union(request, union).await;
        };
        match self.merge_heads(request, &mut Feeds::OldSideHeld(held), merging).await? {
            Merged::Answered => Ok(Flow::Continue),
            Merged::GaveUp => self.answer_with_union(request, union).await,
        }
    }

    /// Answers the client's read with its `UNION ALL` form on its connection, or with the refusal that stands in
    /// for it.
    async fn answer_with_union(
        &mut self,
        request: &mut Request,
        union: Result<Vec<u8>, MysqlError>,
    ) -> Result<Flow, SessionError> {
        match union {
            Ok(sql) => self.union_read(request, &sql).await,
            Err(error) => self.answer_error(request, error).await,
        }
    }

    /// Reads the whole result the client's connection is sending (a result set or an ERR) into memory, unless
    /// it is larger than `limit` bytes: then reads it to its end and returns `None`.
    async fn hold_result(&mut self, limit: usize) -> Result<Option<VecDeque<Bytes>>, SessionError> {
        let mut feeds = Feeds::Connections;
        let mut held = VecDeque::new();
        let caps = self.edxapp.caps;
        match self.head(&mut feeds, Origin::Old).await? {
            Head::Failed(error) => {
                held.push_back(error);
                return Ok(Some(held));
            }
            Head::KnownColumns => {
                return Err(SessionError::BackendProtocol(ProtocolError::Malformed("text result without its columns")));
            }
            Head::Columns(defs) => {
                held.push_back(ResultHead::with_metadata(defs.len() as u64, caps.cache_metadata()).into());
                held.extend(defs);
                if !caps.deprecate_eof() {
                    held.push_back(Bytes::copy_from_slice(&packets::eof(0, self.edxapp.status.bits())));
                }
            }
        }
        let mut size: usize = held.iter().map(Bytes::len).sum();
        loop {
            let packet = self.packet(&mut feeds, Origin::Old).await?;
            let last = !matches!(RowPacket::classify(&packet, caps), RowPacket::Row);
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

    /// Sends `command` with the `old` body on `edxapp` and with the `extended` one on the `csmh` connection, then
    /// answers the client with their results merged as `merging` says.
    pub(super) async fn merge_commands(
        &mut self,
        request: &mut Request,
        command: u8,
        (old, extended): (&[u8], &[u8]),
        merging: Merging<'_>,
    ) -> Result<Flow, SessionError> {
        self.csmh.ready(&mut self.edxapp, &request.snapshot, &self.shared).await?;
        self.consume_request(request);
        // The csmh side first: if it cannot be sent, edxapp has no answer pending.
        let Some(csmh) = self.csmh.connection() else { return Err(SessionError::csmh_closed()) };
        crate::backend::send_command(&mut csmh.conn, command, extended).await.map_err(SessionError::csmh_io)?;
        self.edxapp.send(command, old).await?;
        // Across two servers the merge never gives up for the union: it answers with an error itself.
        match self.merge_heads(request, &mut Feeds::Connections, merging).await? {
            Merged::Answered | Merged::GaveUp => Ok(Flow::Continue),
        }
    }

    /// Reads both sides' column definitions and answers the client: with the merged rows, or with the error
    /// of a side that failed (after reading the other side to its end). When the columns' types do not allow
    /// an exact merge, both results are read to their end: on one server the caller answers with the union
    /// ([`Merged::GaveUp`]); across two servers the client gets an error.
    async fn merge_heads(
        &mut self,
        request: &mut Request,
        feeds: &mut Feeds,
        merging: Merging<'_>,
    ) -> Result<Merged, SessionError> {
        let Merging { plan, protocol, known, capture } = merging;
        let old = self.head(feeds, Origin::Old).await?;
        let new = match self.head(feeds, Origin::Extended).await {
            Err(failure @ SessionError::Csmh(_)) => {
                if let Head::Columns(_) | Head::KnownColumns = old {
                    self.drain_rows(feeds, Origin::Old, &mut [None, None]).await?;
                }
                return Err(failure);
            }
            new => new?,
        };
        let (old, new) = match (resolve(known, old, Origin::Old)?, resolve(known, new, Origin::Extended)?) {
            (Resolved::Columns(old), Resolved::Columns(new)) => (old, new),
            (Resolved::Failed(error), Resolved::Failed(_)) => {
                return self.answer_side_error(request, &error, Origin::Old).await;
            }
            (Resolved::Failed(error), Resolved::Columns(_)) => {
                self.drain_rows(feeds, Origin::Extended, &mut [None, None]).await?;
                return self.answer_side_error(request, &error, Origin::Old).await;
            }
            (Resolved::Columns(_), Resolved::Failed(error)) => {
                self.drain_rows(feeds, Origin::Old, &mut [None, None]).await?;
                return self.answer_side_error(request, &error, Origin::Extended).await;
            }
        };
        let caps = self.edxapp.caps;
        let merge = parse_defs(&old, Origin::Old, caps)
            .and_then(|o| parse_defs(&new, Origin::Extended, caps).map(|n| (o, n)))
            .and_then(|(o, n)| Merge::new(plan, protocol, &o, &n));
        let merge = match merge {
            Ok(merge) => merge,
            Err(error) => {
                self.drain_both(feeds).await?;
                if let Feeds::OldSideHeld(_) = feeds {
                    debug!(%error, "the merge cannot combine these columns: reading both tables with one statement");
                    return Ok(Merged::GaveUp);
                }
                let error =
                    MysqlError::not_supported(format!("csmh-proxy cannot merge this read across two servers: {error}"));
                self.answer_error(request, error).await?;
                return Ok(Merged::Answered);
            }
        };
        self.stream_merged(request, feeds, merge, &new[..plan.visible_columns()], capture).await?;
        Ok(Merged::Answered)
    }

    /// Answers the client with the ERR packet one side sent (the `csmh` side following a deadlock of the old
    /// side's, which rolled the client's transaction back).
    async fn answer_side_error(
        &mut self,
        request: &mut Request,
        payload: &[u8],
        origin: Origin,
    ) -> Result<Merged, SessionError> {
        self.follow_side_error(request, origin, payload).await?;
        let mut out = BytesMut::new();
        frame::write_packet(&mut out, request.first_answer_seq(), payload);
        self.answer(request, &out).await?;
        Ok(Merged::Answered)
    }

    /// Sends the column definitions, then the merged rows, then the end of the result; `capture` keeps what the
    /// client gets.
    async fn stream_merged(
        &mut self,
        request: &mut Request,
        feeds: &mut Feeds,
        mut merge: Merge,
        defs: &[Bytes],
        mut capture: Option<&mut Capture>,
    ) -> Result<(), SessionError> {
        let caps = self.edxapp.caps;
        if let Some(capture) = capture.as_deref_mut() {
            capture.columns(defs, caps);
        }
        let mut out = BytesMut::new();
        // The definitions always follow, whether or not the client has them cached: it takes them either way.
        let head = ResultHead::with_metadata(defs.len() as u64, caps.cache_metadata());
        let mut seq = frame::write_packet(&mut out, request.first_answer_seq(), &head);
        for def in defs {
            seq = frame::write_packet(&mut out, seq, def);
        }
        seq = packets::write_end_of_definitions(&mut out, seq, caps, self.edxapp.status.bits());
        let mut ends = [None, None];
        loop {
            let step = merge.step().map_err(|e| merge_failure(&e))?;
            match step {
                Step::Row(row) => {
                    seq = frame::write_packet(&mut out, seq, &row);
                    if let Some(capture) = capture.as_deref_mut() {
                        capture.row(&row);
                    }
                    if out.len() >= FLUSH_AT {
                        self.write_to_client(request, &out).await?;
                        out.clear();
                    }
                }
                Step::Read(origin) => {
                    let packet = match self.packet(feeds, origin).await {
                        // The old side is read to its end while the failure can still be the client's error.
                        Err(failure @ SessionError::Csmh(_)) if request.answer_seq.is_some() => {
                            self.drain_rows(feeds, Origin::Old, &mut ends).await?;
                            return Err(failure);
                        }
                        packet => packet?,
                    };
                    match RowPacket::classify(&packet, caps) {
                        RowPacket::Row => merge.push(origin, packet).map_err(|e| merge_failure(&e))?,
                        RowPacket::End { warnings, status } => {
                            ends[origin.index()] = Some((warnings, status));
                            merge.finish(origin).map_err(|e| merge_failure(&e))?;
                        }
                        RowPacket::Err => {
                            self.drain_rows(feeds, origin.other(), &mut ends).await?;
                            self.follow_side_error(request, origin, &packet).await?;
                            frame::write_packet(&mut out, seq, &packet);
                            return self.write_to_client(request, &out).await;
                        }
                    }
                }
                Step::Done => break,
            }
        }
        for origin in Origin::BOTH {
            self.drain_rows(feeds, origin, &mut ends).await?;
        }
        let warnings = ends.iter().flatten().fold(0u16, |sum, (w, _)| sum.saturating_add(*w));
        // The client's connection's status: on one server, as it stands after the later (extended) statement.
        let last_on_client_connection = match feeds {
            Feeds::Connections => Origin::Old,
            Feeds::OldSideHeld(_) => Origin::Extended,
        };
        let status = ends[last_on_client_connection.index()].map_or(self.edxapp.status.bits(), |(_, s)| s);
        self.edxapp.note_status(status);
        packets::write_end_of_rows(&mut out, seq, caps, warnings, status);
        self.write_to_client(request, &out).await?;
        if let Some(capture) = capture {
            capture.complete();
        }
        Ok(())
    }

    /// The next packet of a side, progress reports skipped.
    async fn packet(&mut self, feeds: &mut Feeds, origin: Origin) -> Result<Bytes, SessionError> {
        let (conn, failed): (_, fn(io::Error) -> SessionError) = match (feeds, origin) {
            (Feeds::OldSideHeld(held), Origin::Old) => {
                return held.pop_front().ok_or(SessionError::BackendProtocol(ProtocolError::Malformed("result")));
            }
            (Feeds::OldSideHeld(_), Origin::Extended) | (Feeds::Connections, Origin::Old) => {
                (&mut self.edxapp.conn, SessionError::Backend)
            }
            (Feeds::Connections, Origin::Extended) => match self.csmh.connection() {
                Some(csmh) => (&mut csmh.conn, SessionError::csmh_io),
                None => return Err(SessionError::csmh_closed()),
            },
        };
        loop {
            let payload = conn.next_payload().await.map_err(failed)?;
            let payload = payload.ok_or_else(|| failed(io::ErrorKind::UnexpectedEof.into()))?;
            if !packets::is_progress_report(&payload) {
                return Ok(payload);
            }
        }
    }

    /// Reads a side's column count and definitions (and the EOF after them), or its ERR.
    async fn head(&mut self, feeds: &mut Feeds, origin: Origin) -> Result<Head, SessionError> {
        let first = self.packet(feeds, origin).await?;
        if is_err_packet(&first) {
            return Ok(Head::Failed(first));
        }
        if is_ok_packet(&first) {
            return Err(SessionError::BackendProtocol(ProtocolError::Malformed("result set (got OK)")));
        }
        let caps = self.edxapp.caps;
        let head = ResultHead::parse(&first, caps.cache_metadata())
            .ok_or(SessionError::BackendProtocol(ProtocolError::Malformed("column count")))?;
        let mut defs = Vec::new();
        if head.metadata_follows {
            for _ in 0..head.columns {
                defs.push(self.packet(feeds, origin).await?);
            }
        }
        if !caps.deprecate_eof() {
            self.packet(feeds, origin).await?;
        }
        Ok(if head.metadata_follows { Head::Columns(defs) } else { Head::KnownColumns })
    }

    /// Reads and drops what remains of a side's rows, keeping its end.
    async fn drain_rows(
        &mut self,
        feeds: &mut Feeds,
        origin: Origin,
        ends: &mut [Option<(u16, u16)>; 2],
    ) -> Result<(), SessionError> {
        while ends[origin.index()].is_none() {
            let packet = self.packet(feeds, origin).await?;
            match RowPacket::classify(&packet, self.edxapp.caps) {
                RowPacket::Row => {}
                RowPacket::End { warnings, status } => ends[origin.index()] = Some((warnings, status)),
                RowPacket::Err => ends[origin.index()] = Some((0, 0)),
            }
        }
        Ok(())
    }

    /// After one side's ERR `payload`: a deadlock rolled back the client's transaction on that side's server,
    /// and the other server's part of it follows.
    async fn follow_side_error(
        &mut self,
        request: &Request,
        origin: Origin,
        payload: &[u8],
    ) -> Result<(), SessionError> {
        let Some(error) = MysqlError::parse(payload) else { return Ok(()) };
        let server = match origin {
            Origin::Old => Server::Edxapp,
            Origin::Extended => request.snapshot.router.topology().extended_server(),
        };
        match server {
            Server::Edxapp => self.follow_edxapp_error(error.code).await?,
            Server::Csmh => self.follow_csmh_rollback(Some(error.code)).await?,
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

/// The definitions a side's result has: those it sent, remembered in `known` for next time, or those it sent
/// last.
fn resolve(known: &mut KnownColumns, head: Head, origin: Origin) -> Result<Resolved, SessionError> {
    match head {
        Head::Columns(defs) => {
            known.remember(origin, &defs);
            Ok(Resolved::Columns(defs))
        }
        Head::KnownColumns => match known.get(origin) {
            Some(defs) => Ok(Resolved::Columns(defs.clone())),
            None => Err(SessionError::BackendProtocol(ProtocolError::Malformed("result without its columns"))),
        },
        Head::Failed(error) => Ok(Resolved::Failed(error)),
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

/// A merge that fails once rows have started: the result cannot be finished, so the connection ends.
fn merge_failure(error: &MergeError) -> SessionError {
    warn!(%error, "a merged read failed in the middle of its rows");
    SessionError::BackendProtocol(ProtocolError::Unsupported("a merged read failed in the middle of its rows"))
}
