//! One client connection: the handshake relayed to the `edxapp` backend, then one request at a time.
//!
//! Each request is decided once ([`Session::decide`]): a statement by the router of its configuration snapshot,
//! a command on a prepared statement by the session's registry of the statements it prepared twice or on the
//! `csmh` server. The decision is then carried out by one executor ([`Session::carry_out`]), each in its own
//! module:
//!
//! | decision | executor |
//! |---|---|
//! | passthrough, every other command | [`relay`] |
//! | a setup statement answered early, or relayed and its answer learned | [`early`] |
//! | a statement rewritten to the extended table, and the commands on one it prepared on the `csmh` server | [`rewrite`] |
//! | a read of both tables merged in the proxy | [`merged_read`] |
//! | a read of both tables as one `UNION ALL` statement | [`union_read`] |
//! | an UPDATE or DELETE of both tables | [`two_table_write`] |
//! | a statement prepared on both tables, and the commands on it | [`twins`] |
//! | the retired table, what cannot be routed, refused commands | [`refusal`] |
//!
//! They share the connections ([`edxapp`], [`csmh`]), the statements the proxy runs for itself ([`own`]),
//! the values of `edxapp` subqueries written into `csmh` statements ([`inline`]), and [`answer`], the one way
//! the proxy answers a request itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::Permit;
use crate::backend;
use crate::metrics::RouteLabel;
use crate::preconnect::Target;
use crate::protocol::command::{self, Command};
use crate::protocol::conn::{Connection, HangupWatch};
use crate::protocol::errors::{MysqlError, code, sqlstate};
use crate::protocol::frame::PacketSpan;
use crate::protocol::response::End;
use crate::routing::{FanOut, Form, Route};
use crate::state::ProxyState;
use crate::string_literal::Reading;
use crate::topology::{Server, Topology};
use early::{Early, Setup};

mod answer;
mod csmh;
mod early;
mod edxapp;
mod error;
mod full_auth;
mod grants;
mod handshake;
mod inline;
mod merged_read;
mod own;
mod refusal;
mod relay;
mod request;
mod rewrite;
mod statements;
mod transaction;
mod twins;
mod two_table_write;
mod union_read;

pub use answer::refuse;
pub use csmh::CsmhError;
pub use error::SessionError;

use csmh::CsmhLink;
use edxapp::Edxapp;
use error::Oversize;
use grants::Grants;
use request::Request;
use statements::{Registered, Statements};
use transaction::Transaction;

/// Whether the request loop goes on.
enum Flow {
    Continue,
    Quit,
}

/// What the proxy does with one request: decided in one place, carried out by one executor.
enum Decision {
    /// Relay it to `edxapp` as it is, and the answer back.
    Relay,
    /// Carry out the route the router chose for a statement that may name the history table.
    Route(Route),
    /// A command on a prepared statement the proxy prepared twice or on the `csmh` server.
    Registered(Registered),
    /// Answer with the proxy's own error.
    Refuse(MysqlError),
    /// A statement setting the session up, answered early or its answer learned.
    Setup(Setup),
}

/// A client connected to its `edxapp` backend connection.
struct Session {
    client: Connection,
    edxapp: Edxapp,
    csmh: CsmhLink,
    statements: Statements,
    grants: Grants,
    transaction: Transaction,
    /// Whether its setup statements may still be answered early.
    early: Early,
    /// Whether the request in progress runs to its end if the client hangs up.
    no_return: NoReturn,
    shared: Arc<ProxyState>,
}

/// Whether the request in progress has passed the point from which it runs to its end even if the client hangs
/// up: a write of both tables has begun to commit ([`two_table_write`]). Across two servers the `csmh` side
/// commits first, so abandoning the request before `edxapp`'s COMMIT would leave the extended table's part
/// committed and the old table's rolled back. Shared between the executor, which sets it, and the hang-up watch
/// of [`Session::serve`], which then lets the request finish.
#[derive(Clone, Default)]
struct NoReturn(Arc<AtomicBool>);

impl NoReturn {
    /// Marks the point passed, for the rest of the request.
    fn pass(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the point was passed.
    fn passed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Clears the mark for the next request.
    fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Serves one client connection until it ends, logging its opening and closing. `permit` is its place among
/// the connections `admission` let in; it is given back when the session ends.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    mut permit: Permit,
    shared: Arc<ProxyState>,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    shared.metrics.connection_opened();
    info!(%peer, "connection opened");
    let mut client = Connection::new(stream);
    let result = match connect_edxapp(&shared).await {
        Ok(edxapp) => {
            let mut session = Session {
                client,
                edxapp,
                csmh: CsmhLink::default(),
                statements: Statements::default(),
                grants: Grants::default(),
                transaction: Transaction::default(),
                early: Early::Closed,
                no_return: NoReturn::default(),
                shared: Arc::clone(&shared),
            };
            let result = session.run(&mut permit, shutdown.clone()).await;
            if result.is_ok() && !shutdown.is_cancelled() {
                session.csmh.keep_for_later(&shared);
            }
            result
        }
        Err(error) => {
            answer::report(&mut client, &error, Some(0)).await;
            Err(error)
        }
    };
    if let Err(error) = &result {
        warn!(%peer, %error, "connection failed");
    }
    shared.metrics.connection_closed();
    info!(%peer, duration_ms = started.elapsed().as_millis() as u64, "connection closed");
}

/// Connects to the `edxapp` backend named by the configuration in force, on a connection opened ahead if one is
/// ready.
async fn connect_edxapp(shared: &ProxyState) -> Result<Edxapp, SessionError> {
    let target = Target::of(&shared.snapshot().config.backends);
    if let Some(conn) = shared.preconnect.take(&target) {
        return Ok(Edxapp::new(conn, target.address));
    }
    match backend::connect(&shared.resolver, &target.address, target.connect_timeout_secs).await {
        Ok(conn) => Ok(Edxapp::new(conn, target.address)),
        Err(error) => {
            shared.metrics.backend_connect_error(Server::Edxapp);
            Err(SessionError::from(error))
        }
    }
}

impl Session {
    /// Relays the handshake, then serves requests until the client quits, the proxy shuts down, or a side fails;
    /// the client is told why, when the proxy may still answer.
    async fn run(&mut self, permit: &mut Permit, shutdown: CancellationToken) -> Result<(), SessionError> {
        let mut answer_seq = Some(0);
        let secs = self.shared.snapshot().config.listen.handshake_timeout_secs;
        let handshake = tokio::time::timeout(Duration::from_secs(secs), self.handshake(&mut answer_seq)).await;
        permit.logged_in();
        match handshake.unwrap_or(Err(SessionError::HandshakeTimeout { secs })) {
            Err(error) => {
                answer::report(&mut self.client, &error, answer_seq).await;
                return Err(error);
            }
            Ok(End::Err) => return Ok(()),
            Ok(End::Ok) => {}
        }
        // Without a watch (no descriptor to spare), a client that hangs up is noticed when its answer is written.
        let mut hangup = self.client.hangup_watch().ok();
        loop {
            let span = tokio::select! {
                packet = next_request_packet(&mut self.client, &self.shared) => match packet? {
                    Some(span) => span,
                    None => return Ok(()),
                },
                read = self.edxapp.conn.fill() => return Err(relay::unsolicited(read)),
                // From now on the session only finishes what it is in: see below.
                () = shutdown.cancelled(), if !shutdown.is_cancelled() => continue,
            };
            let Some(mut request) = self.request(span) else {
                self.answer_empty_packet(span).await?;
                continue;
            };
            if shutdown.is_cancelled() && !self.in_open_transaction() && request.command != Command::Quit {
                // The proxy is shutting down: a session's next request outside a transaction is its last.
                let _ = self.answer_error(&mut request, server_shutdown()).await;
                return Ok(());
            }
            let watch = hangup.as_mut().filter(|_| !self.runs_to_its_end(&request));
            match self.serve(&mut request, watch).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Quit) => return Ok(()),
                Err(error) => {
                    answer::report(&mut self.client, &error, request.answer_seq).await;
                    return Err(error);
                }
            }
        }
    }

    /// Whether `request` runs to its end even if the client hangs up meanwhile, as the server carries out a
    /// direct client's COMMIT: a statement that ends or steps in a transaction the `csmh` connection holds part
    /// of. Its `csmh` side runs first (a COMMIT there) or its `edxapp` side commits implicitly while the `csmh`
    /// side waits, so abandoning it halfway would leave one server's part committed and the other's rolled back.
    /// Any other request runs to its end once it passes the point of [`NoReturn`].
    fn runs_to_its_end(&self, request: &Request) -> bool {
        self.csmh.in_transaction() && request.command == Command::Query && {
            let payload = request.span.payload_in(&self.client.buf);
            csmh::controls_transactions(command::body(&payload), self.edxapp.escaping())
        }
    }

    /// Whether a transaction is open on either server: with autocommit off, one whose statements so far ran on
    /// the `csmh` server only has none open on `edxapp` yet.
    fn in_open_transaction(&self) -> bool {
        self.edxapp.transaction_open() || self.csmh.in_transaction()
    }

    /// The request whose packet lies at `span`, with the configuration snapshot that decides it; `None` for an
    /// empty packet, which is no command at all.
    fn request(&mut self, span: PacketSpan) -> Option<Request> {
        let open = self.in_open_transaction();
        let snapshot = self.transaction.snapshot(open, &self.shared);
        let first_frame = span.first_frame(&self.client.buf);
        let command = Command::of(first_frame)?;
        Some(Request::new(span, command, first_frame, snapshot))
    }

    /// Serves one request and records it in the metrics: a statement's route and time, a backend connection
    /// failing during it. If the client hangs up before the request is over, the request is abandoned where it
    /// is and the session ends, unless it has passed the point of [`NoReturn`].
    async fn serve(&mut self, request: &mut Request, hangup: Option<&mut HangupWatch>) -> Result<Flow, SessionError> {
        let arrived = Instant::now();
        let csmh_failures = self.csmh.failures();
        self.no_return.clear();
        let no_return = self.no_return.clone();
        // Reading the session's settings is a round trip to `edxapp` too: the watch covers it.
        let handled = async {
            let decision = match self.transaction.take_untold_end(request.command) {
                Some(error) => Decision::Refuse(error),
                None => match self.decide_setup(request) {
                    Some(setup) => setup,
                    None => {
                        let reading = self.reading_of(request).await?;
                        self.decide(request, reading)
                    }
                },
            };
            self.carry_out(request, decision).await
        };
        let result = match hangup {
            Some(watch) => {
                let mut handled = std::pin::pin!(handled);
                tokio::select! {
                    biased;
                    result = &mut handled => result,
                    () = watch.hung_up() => match no_return.passed() {
                        true => handled.await,
                        false => Err(SessionError::ClientHungUp),
                    },
                }
            }
            None => handled.await,
        };
        let result = match result {
            Err(SessionError::Csmh(failure)) => self.contain_csmh_failure(request, failure).await,
            result => result,
        };
        self.check_answers_sent_ahead();
        debug_assert!(result.is_err() || !request.buffered, "a request answered without leaving the client's buffer");
        let metrics = &self.shared.metrics;
        match (&result, request.label) {
            // An abandoned statement had no answer: it is counted as a hang-up, not under its route.
            (Err(SessionError::ClientHungUp), _) => metrics.client_hangup(),
            (_, Some(route)) => metrics.statement(route, arrived.elapsed()),
            (_, None) => {}
        }
        if self.csmh.failures() > csmh_failures {
            metrics.backend_query_error(Server::Csmh);
        }
        if result.as_ref().is_err_and(SessionError::is_edxapp_failure) {
            metrics.backend_query_error(Server::Edxapp);
        }
        result
    }

    /// A failure of the `csmh` connection fails the request, not the session: the connection is dropped (the
    /// client's transaction rolled back if it had part of it) and the client gets the error; the next statement
    /// that needs the `csmh` server opens a new connection. Executors leave the `edxapp` connection with no
    /// answer pending before they return such a failure. Once part of the answer has reached the client, the
    /// session ends, as it would with a server that died in the middle of an answer.
    async fn contain_csmh_failure(&mut self, request: &mut Request, failure: CsmhError) -> Result<Flow, SessionError> {
        if request.answer_seq.is_none() {
            self.csmh.close(&failure);
            return Err(SessionError::Csmh(failure));
        }
        let rolls_back = self.csmh.in_transaction();
        let error = self.csmh.fail(&mut self.edxapp, failure).await?;
        if request.command.response().is_none() {
            // A command that gets no answer (closing a statement, sending long data) gets no error either; a
            // transaction rolled back meanwhile is the error of the client's next statement.
            self.consume_request(request);
            if rolls_back {
                self.transaction.ended_untold(error);
            }
            return Ok(Flow::Continue);
        }
        self.answer_error(request, error).await
    }

    /// How the client's session reads the statement of `request`, as far as routing it needs to know: the
    /// client's settings are read on `edxapp` only for a statement holding bytes they could read otherwise than
    /// the tokenizer ([`Router::needs_session_settings`](crate::routing::Router::needs_session_settings)).
    async fn reading_of(&mut self, request: &Request) -> Result<Reading, SessionError> {
        let needs_settings = matches!(request.command, Command::Query | Command::StmtPrepare) && {
            let payload = request.span.payload_in(&self.client.buf);
            request.snapshot.router.needs_session_settings(command::body(&payload))
        };
        match needs_settings {
            true => self.edxapp.reading().await,
            false => Ok(Reading { escaping: self.edxapp.escaping(), ..Reading::TOKENIZER }),
        }
    }

    /// Decides what happens to `request`, read as `reading` says: the one place where a request's handling is
    /// chosen.
    fn decide(&mut self, request: &mut Request, reading: Reading) -> Decision {
        let form = match request.command {
            Command::Query => Form::Query,
            Command::StmtPrepare => Form::Prepare,
            Command::Refused(byte) => return Decision::Refuse(refused_command(byte, request.command)),
            _ => return self.decide_on_statement(request),
        };
        let payload = request.span.payload_in(&self.client.buf);
        let statement = command::body(&payload);
        let classify = || request.snapshot.router.classify_for(statement, form, reading);
        let (classified, cache) = off_the_event_loop_if_long(statement, classify);
        if let Some(outcome) = cache {
            self.shared.metrics.route_cache(outcome);
        }
        request.label = Some(RouteLabel::of(&classified));
        match classified.into_route() {
            Route::Passthrough if form == Form::Prepare && self.prepares_unfollowable(request, &payload) => {
                Decision::Refuse(MysqlError::not_supported(
                    "csmh-proxy does not prepare statements that end or step in a transaction (COMMIT, ROLLBACK, \
                     savepoints, BEGIN, XA, CALL, statements that commit implicitly) with the extended table on its \
                     own server, whose side of the transaction could not follow their execution: send them as text",
                ))
            }
            Route::Passthrough => Decision::Relay,
            route => Decision::Route(route),
        }
    }

    /// Decides a command that may name a prepared statement: one the proxy handles itself is carried out by the
    /// registry's decision, any other is relayed. A command naming [`command::LAST_STATEMENT_ID`] (MariaDB's "the
    /// statement prepared last") is first made to name that statement by its own id, in the packet too, since the
    /// server it goes to may have prepared statements of the proxy's since.
    fn decide_on_statement(&mut self, request: &mut Request) -> Decision {
        let Some(named) = request.statement_id else { return Decision::Relay };
        if named == command::LAST_STATEMENT_ID && matches!(request.command, Command::StmtExecute { .. }) {
            // The server checks this of a direct execution only; with the statement's own id it would not.
            let params = self.statements.last_parameters().unwrap_or_default();
            if !command::execute_sends_types(request.span.first_frame(&self.client.buf), params) {
                return Decision::Refuse(MysqlError::malformed_command());
            }
        }
        let Some(id) = self.statements.resolve(request.command, named) else {
            return Decision::Registered(Registered::NoLastStatement);
        };
        if id != named {
            // `statement_id` was read within the packet, so the packet is long enough to take another.
            command::set_statement_id(request.span.first_frame_mut(&mut self.client.buf), id);
            request.statement_id = Some(id);
        }
        let csmh = self.csmh.connection_number();
        self.statements.lookup(id, csmh).map_or(Decision::Relay, Decision::Registered)
    }

    /// Whether a statement to prepare would, executed, end or step in the client's transaction, with the
    /// extended table on its own server and flags that may route to it: the `csmh` side follows such statements
    /// in text only, and a prepared one's execution is a COM_STMT_EXECUTE the proxy does not read.
    fn prepares_unfollowable(&self, request: &Request, payload: &[u8]) -> bool {
        let (statement, router) = (command::body(payload), &request.snapshot.router);
        router.topology() == Topology::TwoServers
            && !router.is_passthrough()
            && statement.len() <= request.snapshot.config.listen.max_parsed_statement_bytes
            && csmh::controls_transactions(statement, self.edxapp.escaping())
    }

    /// Carries out a decision with the executor for its kind.
    async fn carry_out(&mut self, request: &mut Request, decision: Decision) -> Result<Flow, SessionError> {
        let prepare = request.command == Command::StmtPrepare;
        if prepare {
            // Whatever the decision, the client's last statement is the one this prepare gives it, if any.
            self.statements.preparing();
        }
        match decision {
            Decision::Relay | Decision::Route(Route::Passthrough) => self.relay(request).await,
            Decision::Refuse(error) => self.answer_error(request, error).await,
            Decision::Setup(setup) => self.set_up(request, setup).await,
            Decision::Registered(Registered::Twin(shadow)) => self.on_twin(request, shadow).await,
            Decision::Registered(Registered::OnCsmh { id, grants }) => {
                self.on_csmh_statement(request, id, grants).await
            }
            Decision::Registered(Registered::Lost { id }) => self.on_lost_statement(request, id).await,
            Decision::Registered(Registered::NoLastStatement) => self.on_no_last_statement(request).await,
            Decision::Route(Route::Rewrite(rewritten)) => self.rewrite(request, rewritten).await,
            Decision::Route(Route::FanOut(FanOut::Union(sql))) => self.union_read(request, &sql).await,
            Decision::Route(Route::FanOut(FanOut::Merge(read))) if prepare => self.prepare_merged(request, *read).await,
            Decision::Route(Route::FanOut(FanOut::Merge(read))) => self.merged_read(request, *read).await,
            Decision::Route(Route::FanOut(FanOut::Writes { old, extended, inline, on })) if prepare => {
                self.prepare_writes(request, &old, &extended, &inline, on).await
            }
            Decision::Route(Route::FanOut(FanOut::Writes { old, extended, inline, on })) => {
                self.write_both(request, &old, &extended, &inline, on).await
            }
            Decision::Route(Route::Block(error)) => self.block(request, error).await,
            Decision::Route(Route::Refuse(error)) => self.refuse(request, error).await,
        }
    }
}

/// Statements at least this long are routed off the runtime's event loop: parsing one takes milliseconds to
/// seconds (a 3.9 MB `IN` list of half a million ids: about a second), which would hold up every session of its
/// worker thread.
const LONG_STATEMENT_BYTES: usize = 256 * 1024;

/// Runs `route` (the routing of `statement`) where it holds up no other session when the statement is long: in
/// [`tokio::task::block_in_place`], which hands the worker thread's other sessions to another thread meanwhile.
/// A runtime with one thread (the tests' own) has no other thread to hand them to, and runs it in place.
fn off_the_event_loop_if_long<T>(statement: &[u8], route: impl FnOnce() -> T) -> T {
    let multi_thread = || {
        tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    };
    match statement.len() >= LONG_STATEMENT_BYTES && multi_thread() {
        true => tokio::task::block_in_place(route),
        false => route(),
    }
}

/// The answer to a request outside a transaction once the proxy is shutting down, as a server shutting down
/// answers.
fn server_shutdown() -> MysqlError {
    MysqlError::new(
        code::ER_SERVER_SHUTDOWN,
        sqlstate::LINK_FAILURE,
        "Server shutdown in progress (csmh-proxy is stopping)",
    )
}

/// The error for a command the proxy does not relay.
fn refused_command(byte: u8, command: Command) -> MysqlError {
    let reason = command.refusal().unwrap_or("not relayed by csmh-proxy");
    info!(command = byte, "command refused: {reason}");
    MysqlError::new(
        code::ER_UNKNOWN_COM_ERROR,
        sqlstate::LINK_FAILURE,
        format!("Command {byte:#04x} refused: {reason}"),
    )
}

/// Waits for the client's next request packet; `None` when the client closed. A packet larger than
/// `listen.max_packet_bytes` is answered with error 1153 before it is read, and ends the session.
async fn next_request_packet(client: &mut Connection, shared: &ProxyState) -> Result<Option<PacketSpan>, SessionError> {
    let limit = shared.max_packet_bytes();
    let read = client.next_packet_within(limit).await;
    let error = match read.map_err(Oversize::Request.of_client(limit)) {
        Ok(packet) => return Ok(packet),
        Err(error) => error,
    };
    answer::report(client, &error, None).await;
    Err(error)
}
