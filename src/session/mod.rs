//! One client connection: the handshake relayed to the `edxapp` backend, then one command at a time, each
//! relayed and its response copied back as it arrives.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mysql_common::constants::StatusFlags;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::{self, BackendError};
use crate::metrics::RouteLabel;
use crate::protocol::ProtocolError;
use crate::protocol::capabilities::Negotiated;
use crate::protocol::command::{COM_RESET_CONNECTION, Command};
use crate::protocol::conn::{Connection, HangupWatch};
use crate::protocol::frame::{self, HEADER_LEN, PacketSpan};
use crate::protocol::packets::{self, MysqlError};
use crate::protocol::response::{ClientTurn, End, Expect, Progress, ResponseScanner};
use crate::routing::{Route, Side};
use crate::shared::{Shared, Snapshot};

mod csmh;
mod merged;
mod prepared;
mod routed;

/// MySQL's "Deadlock found when trying to get lock": the server has rolled the whole transaction back.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// How long a client may take to answer the server's greeting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a session ended early, tagged with the side that failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading from or writing to the client failed.
    #[error("client connection: {0}")]
    Client(io::Error),
    /// The client sent something the proxy cannot relay.
    #[error("client protocol: {0}")]
    ClientProtocol(ProtocolError),
    /// The client did not finish the handshake in time.
    #[error("client did not complete the handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    HandshakeTimeout,
    /// The backend could not be reached.
    #[error(transparent)]
    Connect(#[from] BackendError),
    /// Reading from or writing to the backend failed, or it closed the connection.
    #[error("backend connection: {0}")]
    Backend(io::Error),
    /// The backend sent something that does not follow the protocol.
    #[error("backend protocol: {0}")]
    BackendProtocol(ProtocolError),
    /// The client closed its connection while a request was in flight; the backend connections are closed with
    /// the session, so the servers end the statement (and roll back its transaction) as they would directly.
    #[error("the client closed its connection while a request was in flight")]
    ClientHungUp,
}

impl SessionError {
    /// The error the client is told before its connection closes.
    fn to_mysql(&self) -> MysqlError {
        match self {
            SessionError::Connect(e) => MysqlError::new(
                2003,
                b"HY000",
                format!("Can't connect to MySQL server on '{}' (through csmh-proxy: {e})", e.address()),
            ),
            SessionError::ClientProtocol(e) => MysqlError::new(1043, b"08S01", format!("Bad handshake: {e}")),
            SessionError::Backend(_) | SessionError::BackendProtocol(_) => {
                MysqlError::new(2013, b"HY000", format!("Lost connection to MySQL server during query ({self})"))
            }
            SessionError::Client(_) | SessionError::ClientHungUp | SessionError::HandshakeTimeout => {
                MysqlError::new(1043, b"08S01", "Bad handshake")
            }
        }
    }
}

/// Whether the command loop goes on.
enum Flow {
    Continue,
    Quit,
}

/// A client connected to its `edxapp` backend connection.
struct Session {
    client: Connection,
    backend: Connection,
    caps: Negotiated,
    shared: Arc<Shared>,
    /// Sequence id the proxy's own answer would take, while nothing has been relayed for the current request.
    answer_seq: Option<u8>,
    /// Status flags of the last response from the `edxapp` connection (transaction state, autocommit).
    status: StatusFlags,
    /// The configuration snapshot a transaction in progress began with; statements in it route by it.
    pinned: Option<Arc<Snapshot>>,
    /// The proxy's own connection to a separate `csmh` server, once a statement needed it.
    csmh: Option<csmh::Csmh>,
    /// The error code of the last response relayed from `edxapp`, if it was an ERR.
    last_error: Option<u16>,
    /// The client's prepared statements that have an extended-table twin, by the id the client knows.
    shadows: std::collections::HashMap<u32, prepared::Shadow>,
    /// The route the metrics count the request being handled under, when it is a statement.
    statement: Option<RouteLabel>,
}

/// Serves one client connection until it ends, logging its opening and closing.
pub async fn run(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    let started = Instant::now();
    shared.metrics.connection_opened();
    info!(%peer, "connection opened");
    let mut client = Connection::new(stream);
    let result = match connect_backend(&shared).await {
        Ok(backend) => {
            let mut session = Session {
                client,
                backend,
                caps: Negotiated::new(0, 0),
                shared: Arc::clone(&shared),
                answer_seq: Some(0),
                status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
                pinned: None,
                csmh: None,
                last_error: None,
                shadows: Default::default(),
                statement: None,
            };
            let result = session.run(shutdown).await;
            if let Err(error) = &result {
                session.report(error).await;
            }
            result
        }
        Err(error) => {
            report(&mut client, &error, 0).await;
            Err(error)
        }
    };
    if let Err(error) = &result {
        warn!(%peer, %error, "connection failed");
    }
    shared.metrics.connection_closed();
    info!(%peer, duration_ms = started.elapsed().as_millis() as u64, "connection closed");
}

/// Connects to the `edxapp` backend named by the configuration in force.
async fn connect_backend(shared: &Shared) -> Result<Connection, SessionError> {
    let (address, timeout) = {
        let snapshot = shared.snapshot();
        let edxapp = &snapshot.config.backends.edxapp;
        (edxapp.address.clone(), edxapp.connect_timeout_secs)
    };
    backend::connect(&address, timeout).await.map_err(|e| {
        shared.metrics.backend_connect_error(Side::Edxapp);
        SessionError::from(e)
    })
}

/// Sends `error` to the client as an ERR packet with sequence id `seq`.
async fn report(client: &mut Connection, error: &SessionError, seq: u8) {
    if matches!(error, SessionError::Client(_) | SessionError::ClientHungUp) {
        return;
    }
    let mut out = BytesMut::new();
    error.to_mysql().write_packet(&mut out, seq);
    let _ = client.write_all(&out).await;
}

impl Session {
    /// Relays the handshake, then serves commands until the client quits, the proxy shuts down, or a side fails.
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), SessionError> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake()).await {
            Err(_) => return Err(SessionError::HandshakeTimeout),
            Ok(Err(error)) => return Err(error),
            Ok(Ok(End::Err)) => return Ok(()),
            Ok(Ok(End::Ok)) => {}
        }
        // Without a watch (no descriptor to spare), a client that hangs up is noticed when its answer is written.
        let mut hangup = self.client.hangup_watch().ok();
        loop {
            let span = tokio::select! {
                packet = self.client.next_packet() => match packet.map_err(SessionError::Client)? {
                    Some(span) => span,
                    None => return Ok(()),
                },
                read = self.backend.fill() => return Err(self.unsolicited(read)),
                _ = shutdown.cancelled() => return Ok(()),
            };
            if let Flow::Quit = self.execute(span, hangup.as_mut()).await? {
                return Ok(());
            }
        }
    }

    /// Relays the server's greeting and the client's answer (both with capabilities masked), then the
    /// authentication exchange; returns how it ended.
    async fn handshake(&mut self) -> Result<End, SessionError> {
        let span = self.backend.next_packet().await.map_err(SessionError::Backend)?.ok_or_else(closed)?;
        let greeting = &mut self.backend.buf[HEADER_LEN..span.wire_len];
        if greeting.first() == Some(&0xFF) {
            // The server refused the connection outright (too many connections, host blocked): pass it on.
            self.relay_to_client(span.wire_len).await?;
            return Ok(End::Err);
        }
        let server = single_frame(&span)
            .and_then(|()| packets::patch_greeting(greeting))
            .map_err(SessionError::BackendProtocol)?;
        self.relay_to_client(span.wire_len).await?;

        let span = self.client.next_packet().await.map_err(SessionError::Client)?.ok_or_else(client_closed)?;
        self.answer_seq = Some(span.last_seq.wrapping_add(1));
        let hello = single_frame(&span)
            .and_then(|()| packets::patch_client_response(&mut self.client.buf[HEADER_LEN..span.wire_len]))
            .map_err(SessionError::ClientProtocol)?;
        debug!(user = %hello.user, database = ?hello.database, backend_thread = server.connection_id, "authenticating");
        self.caps = Negotiated::new(server.capabilities, hello.capabilities)
            .with_mariadb(server.mariadb_capabilities, hello.mariadb_capabilities);
        self.relay_to_backend(span.wire_len).await?;
        self.relay_response(Expect::Auth).await
    }

    /// Handles one client request whose packet lies at the start of the client buffer, and records it in the
    /// metrics: a statement's route and time, a backend connection failing during it. If the client hangs up
    /// before the request is over, the request is abandoned where it is and the session ends.
    async fn execute(&mut self, span: PacketSpan, hangup: Option<&mut HangupWatch>) -> Result<Flow, SessionError> {
        let arrived = Instant::now();
        let had_csmh = self.csmh.is_some();
        let result = match hangup {
            Some(watch) => tokio::select! {
                biased;
                result = self.handle(span) => result,
                () = watch.hung_up() => Err(SessionError::ClientHungUp),
            },
            None => self.handle(span).await,
        };
        let metrics = &self.shared.metrics;
        match (&result, self.statement.take()) {
            // An abandoned statement had no answer: it is counted as a hang-up, not under its route.
            (Err(SessionError::ClientHungUp), _) => metrics.client_hangup(),
            (_, Some(route)) => metrics.statement(route, arrived.elapsed()),
            (_, None) => {}
        }
        if had_csmh && self.csmh.is_none() {
            // The csmh connection is dropped only when it failed.
            metrics.backend_query_error(Side::Csmh);
        }
        if let Err(SessionError::Backend(_) | SessionError::BackendProtocol(_)) = &result {
            metrics.backend_query_error(Side::Edxapp);
        }
        result
    }

    /// Handles one client request whose packet lies at the start of the client buffer.
    async fn handle(&mut self, span: PacketSpan) -> Result<Flow, SessionError> {
        self.answer_seq = Some(span.last_seq.wrapping_add(1));
        // Only the first bytes are read (command, statement id, flags): the first frame holds them.
        let Some(command) = Command::of(&self.client.buf[HEADER_LEN..span.wire_len]) else {
            return self.refuse(span, MysqlError::new(1835, b"08S01", "Malformed communication packet")).await;
        };
        if command.names_statement() && !self.shadows.is_empty() {
            if let Some(shadow) = self.shadows.get(&statement_id(&self.client.buf)).cloned() {
                return self.on_shadowed(span, command, shadow).await;
            }
        }
        if matches!(command, Command::ChangeUser | Command::Relayed(COM_RESET_CONNECTION)) {
            // The server forgets the session's prepared statements; their shadows are left to the connection.
            self.shadows.clear();
        }
        if self.csmh.is_some()
            && command.names_statement()
            && statement_id(&self.client.buf) & routed::CSMH_STATEMENT != 0
        {
            return self.on_csmh_statement(span, command).await;
        }
        let route = match command {
            Command::Query | Command::StmtPrepare => self.route(&span, command),
            Command::Refused(byte) => {
                let reason = command.refusal().unwrap_or("not relayed by csmh-proxy");
                info!(command = byte, "command refused: {reason}");
                let error = MysqlError::new(1047, b"08S01", format!("Command {byte:#04x} refused: {reason}"));
                return self.refuse(span, error).await;
            }
            _ => Route::Passthrough,
        };
        if route != Route::Passthrough {
            return self.execute_routed(span, command, route).await;
        }
        if command == Command::Query && self.csmh.as_ref().is_some_and(csmh::Csmh::in_transaction) {
            let text = statement_text(&self.client.buf, &span).into_owned();
            if let Some(error) = self.follow_transaction_control(&text).await? {
                return self.refuse(span, error).await;
            }
        }
        if let Some(csmh) = self.csmh.as_mut() {
            let payload = &self.client.buf[HEADER_LEN..span.wire_len];
            csmh.synced &= !csmh::may_change_settings(command, payload, span.is_single_frame());
        }
        self.relay_to_backend(span.wire_len).await?;
        match command.response() {
            Some(expect) => {
                self.relay_response(expect).await?;
                self.follow_transaction_end().await;
            }
            None if command == Command::Quit => return Ok(Flow::Quit),
            None => {}
        }
        Ok(Flow::Continue)
    }

    /// The route of a statement: passthrough unless its text names the history table, then what the
    /// configuration snapshot of the statement (or of the transaction it is part of) says.
    fn route(&mut self, span: &PacketSpan, command: Command) -> Route {
        let snapshot = match &self.pinned {
            Some(pinned) if self.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS) => Arc::clone(pinned),
            _ => self.shared.snapshot(),
        };
        let text = statement_text(&self.client.buf, span);
        let (route, label) = if snapshot.prefilter.matches(&text) {
            let route = match command {
                Command::StmtPrepare => snapshot.router.route_prepared(&text),
                _ => snapshot.router.route(&text),
            };
            let label = RouteLabel::of(&route);
            (route, label)
        } else {
            (Route::Passthrough, RouteLabel::PassthroughMiss)
        };
        self.statement = Some(label);
        self.pinned = Some(snapshot);
        route
    }

    /// Answers the current request with the proxy's own ERR instead of relaying it.
    async fn refuse(&mut self, span: PacketSpan, error: MysqlError) -> Result<Flow, SessionError> {
        self.client.consume(span.wire_len);
        let mut out = BytesMut::new();
        error.write_packet(&mut out, span.last_seq.wrapping_add(1));
        self.client.write_all(&out).await.map_err(SessionError::Client)?;
        self.answer_seq = None;
        Ok(Flow::Continue)
    }

    /// Copies the backend's response to the client as it arrives, handing the turn to the client where the
    /// protocol says so, until the response ends.
    async fn relay_response(&mut self, expect: Expect) -> Result<End, SessionError> {
        let mut scanner = ResponseScanner::new(expect, self.caps);
        loop {
            let progress = copy_response(&mut self.backend, &mut self.client, &mut scanner, &mut self.answer_seq)
                .await
                .map_err(|failure| failure.on_edxapp())?;
            match progress {
                Progress::NeedMore => unreachable!("copy_response reads until there is progress"),
                Progress::ClientTurn(ClientTurn::Auth) => self.relay_client_packet().await?,
                Progress::ClientTurn(ClientTurn::LocalInfile) => self.relay_local_infile().await?,
                Progress::Done(end) => {
                    if let Some(status) = scanner.status() {
                        self.status = status;
                    }
                    self.last_error = scanner.error_code();
                    if self.last_error == Some(ER_LOCK_DEADLOCK) {
                        // An ERR carries no status flags, but this one means the server left the transaction.
                        self.status.remove(StatusFlags::SERVER_STATUS_IN_TRANS);
                    }
                    return Ok(end);
                }
            }
        }
    }

    /// Relays one whole packet from the client to the backend.
    async fn relay_client_packet(&mut self) -> Result<(), SessionError> {
        let span = self.client.next_packet().await.map_err(SessionError::Client)?.ok_or_else(client_closed)?;
        self.relay_to_backend(span.wire_len).await
    }

    /// Relays the file contents a client sends for LOAD DATA LOCAL INFILE, up to and including the empty packet
    /// that ends them.
    async fn relay_local_infile(&mut self) -> Result<(), SessionError> {
        loop {
            let span = self.client.next_packet().await.map_err(SessionError::Client)?.ok_or_else(client_closed)?;
            self.relay_to_backend(span.wire_len).await?;
            if span.payload_len == 0 {
                return Ok(());
            }
        }
    }

    async fn relay_to_client(&mut self, n: usize) -> Result<(), SessionError> {
        self.answer_seq = None;
        self.client.relay_from(&mut self.backend, n).await.map_err(SessionError::Client)
    }

    async fn relay_to_backend(&mut self, n: usize) -> Result<(), SessionError> {
        self.backend.relay_from(&mut self.client, n).await.map_err(SessionError::Backend)
    }

    /// The backend spoke while no request was pending: it is closing (idle timeout, KILL, shutdown). The
    /// session cannot be kept in step, so it ends; the client sees its connection close, as it would directly.
    fn unsolicited(&self, read: io::Result<usize>) -> SessionError {
        match read {
            Ok(0) => closed(),
            Ok(_) => SessionError::BackendProtocol(ProtocolError::Unsupported("backend sent data while idle")),
            Err(e) => SessionError::Backend(e),
        }
    }

    /// Tells the client why the session ends, if no part of a response has been relayed for its request.
    async fn report(&mut self, error: &SessionError) {
        if let Some(seq) = self.answer_seq.take() {
            report(&mut self.client, error, seq).await;
        }
    }
}

/// What went wrong while copying a response, by side.
enum CopyFailure {
    /// The server's connection failed or closed.
    Server(io::Error),
    /// The server's bytes do not follow the protocol.
    Protocol(ProtocolError),
    /// Writing to the client failed.
    Client(io::Error),
}

impl CopyFailure {
    /// The session error when the server was the client's own `edxapp` connection.
    fn on_edxapp(self) -> SessionError {
        match self {
            CopyFailure::Server(e) => SessionError::Backend(e),
            CopyFailure::Protocol(e) => SessionError::BackendProtocol(e),
            CopyFailure::Client(e) => SessionError::Client(e),
        }
    }
}

/// Copies a response from `server` to `client` as its bytes arrive, until it ends or the client must speak.
/// Clears `answer_seq` once anything has reached the client, since the proxy can no longer answer instead.
async fn copy_response(
    server: &mut Connection,
    client: &mut Connection,
    scanner: &mut ResponseScanner,
    answer_seq: &mut Option<u8>,
) -> Result<Progress, CopyFailure> {
    loop {
        let (n, progress) = scanner.scan(&server.buf).map_err(CopyFailure::Protocol)?;
        if n > 0 {
            *answer_seq = None;
            client.relay_from(server, n).await.map_err(CopyFailure::Client)?;
        }
        match progress {
            Progress::NeedMore => match server.fill().await {
                Ok(0) => return Err(CopyFailure::Server(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(CopyFailure::Server(e)),
            },
            other => return Ok(other),
        }
    }
}

/// The statement text of a COM_QUERY or COM_STMT_PREPARE, joined across frames only when it spans several.
fn statement_text<'a>(buf: &'a [u8], span: &PacketSpan) -> Cow<'a, [u8]> {
    if span.is_single_frame() {
        Cow::Borrowed(&buf[HEADER_LEN + 1..span.wire_len])
    } else {
        let whole = frame::payload(bytes::Bytes::copy_from_slice(&buf[..span.wire_len]), span);
        Cow::Owned(whole[1..].to_vec())
    }
}

/// The statement id of a COM_STMT_* packet at the start of `buf`.
fn statement_id(buf: &[u8]) -> u32 {
    buf.get(HEADER_LEN + 1..HEADER_LEN + 5).map_or(0, |id| u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}

/// Handshake packets are small; one that spans frames is not a handshake.
fn single_frame(span: &PacketSpan) -> Result<(), ProtocolError> {
    if span.is_single_frame() { Ok(()) } else { Err(ProtocolError::Malformed("handshake")) }
}

fn closed() -> SessionError {
    SessionError::Backend(io::Error::new(io::ErrorKind::UnexpectedEof, "the backend closed the connection"))
}

fn client_closed() -> SessionError {
    SessionError::Client(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed the connection"))
}
