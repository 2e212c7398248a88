//! The admin HTTP listener (`[admin] address`, off when absent): `GET /metrics` in the Prometheus text format,
//! `GET /livez` (the process serves: a liveness probe), `GET /readyz` (it accepts clients and is not shutting
//! down: a readiness probe, which asks nothing of the backends), `GET /healthz` (both backends accept a TCP
//! connection), and `GET /config` (the configuration in force, as JSON, without secrets). It reads the same
//! [`ProxyState`] state as the sessions, so it follows reloads, and it serves until the sessions are done.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{Backend, Config, Preconnect};
use crate::history::Flag;
use crate::history::{Stage, StatementKind, Target};
use crate::metrics::{self, ConfigState, Metrics, PreconnectCounters, ShadowCounts};
use crate::resolver::Resolver;
use crate::state::{ConfigSnapshot, ProxyState};
use crate::topology::Topology;

/// How long `/healthz` waits for each backend to accept a TCP connection.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a shutdown waits for admin requests in flight before closing their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why the admin listener cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("cannot listen for admin requests on {address}: {source}")]
    Bind {
        /// `[admin] address` as configured.
        address: String,
        /// Why binding failed.
        source: io::Error,
    },
    /// Serving failed.
    #[error("the admin listener failed: {0}")]
    Serve(io::Error),
}

/// Binds the admin listener on `address` (`host:port`; port 0 picks a free port).
pub async fn bind(address: &str) -> Result<TcpListener, AdminError> {
    TcpListener::bind(address).await.map_err(|source| AdminError::Bind { address: address.to_owned(), source })
}

/// The admin listener running in the background.
#[derive(Debug)]
pub struct AdminServer {
    task: JoinHandle<Result<(), AdminError>>,
}

/// Serves admin requests on `listener` in the background until `shutdown` is cancelled.
pub fn spawn(listener: TcpListener, shared: Arc<ProxyState>, shutdown: CancellationToken) -> AdminServer {
    AdminServer { task: tokio::spawn(serve(listener, shared, shutdown)) }
}

impl AdminServer {
    /// Waits (briefly) for the listener to stop once its shutdown token is cancelled; then closes what is left.
    pub async fn stopped(mut self) {
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => warn!(%error, "admin listener"),
            Ok(Err(error)) => warn!(%error, "admin listener task"),
            Err(_) => self.task.abort(),
        }
    }
}

/// Serves admin requests on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<ProxyState>,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    axum::serve(listener, routes(shared))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(AdminError::Serve)
}

/// The admin endpoints.
pub fn routes(shared: Arc<ProxyState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_endpoint))
        .route("/livez", get(live_endpoint))
        .route("/readyz", get(ready_endpoint))
        .route("/healthz", get(health_endpoint))
        .route("/config", get(config_endpoint))
        .with_state(AdminState { shared, health: Arc::default() })
}

/// What the admin endpoints read: the proxy's state, and `/healthz`'s last probes.
#[derive(Clone)]
struct AdminState {
    shared: Arc<ProxyState>,
    health: Arc<HealthProbes>,
}

impl axum::extract::FromRef<AdminState> for Arc<ProxyState> {
    fn from_ref(state: &AdminState) -> Arc<ProxyState> {
        Arc::clone(&state.shared)
    }
}

/// How long `/healthz` answers with the probes it made last rather than probing again.
const HEALTH_REUSE: Duration = Duration::from_secs(1);

/// `/healthz`'s last probes: made at most once per [`HEALTH_REUSE`] for a configuration, however many requests
/// come (those arriving during a probe wait for it). Each probe opens a TCP connection to both servers and closes
/// it before their handshake, which a server counts as a connection error of the proxy's host: unbounded, a burst
/// of requests to this unauthenticated endpoint could reach the servers' `max_connect_errors` and have the
/// proxy's host blocked, and every client with it.
#[derive(Default)]
struct HealthProbes(tokio::sync::Mutex<Option<(tokio::time::Instant, u64, Health)>>);

impl HealthProbes {
    /// The health of the backends of the configuration in force, probed unless probed within [`HEALTH_REUSE`].
    async fn check(&self, shared: &ProxyState) -> Health {
        let mut last = self.0.lock().await;
        let snapshot = shared.snapshot();
        if let Some((at, probed_for, health)) = &*last {
            if at.elapsed() < HEALTH_REUSE && *probed_for == snapshot.generation {
                return health.clone();
            }
        }
        let health = check_health(&snapshot).await;
        *last = Some((tokio::time::Instant::now(), snapshot.generation, health.clone()));
        health
    }
}

/// The configuration's generation and reload counts, as the metrics show them.
fn config_state(shared: &ProxyState) -> ConfigState {
    ConfigState {
        generation: shared.generation(),
        reloads_applied: shared.reloads_applied(),
        reloads_rejected: shared.reloads_rejected(),
    }
}

/// `GET /metrics`: every metric in the Prometheus text format.
async fn metrics_endpoint(State(shared): State<Arc<ProxyState>>) -> Response {
    match shared.metrics.render(config_state(&shared)) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the metrics\n").into_response(),
    }
}

/// `/healthz`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Whether both backends accepted a connection.
    pub healthy: bool,
    /// Each backend's probe.
    pub backends: Backends<Probe>,
}

/// One value per backend.
#[derive(Debug, Clone, Serialize)]
pub struct Backends<T> {
    /// The `edxapp` backend.
    pub edxapp: T,
    /// The `csmh` backend.
    pub csmh: T,
}

/// Whether one backend accepted a TCP connection.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The address probed.
    pub address: String,
    /// Whether it accepted a connection within [`HEALTH_TIMEOUT`].
    pub reachable: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /livez`: 200 while the process serves HTTP at all (a restart would not help otherwise).
async fn live_endpoint() -> &'static str {
    "live\n"
}

/// `GET /readyz`: 200 while the proxy accepts clients with a configuration in force; 503 from the moment it
/// begins to shut down, so a load balancer sends new clients elsewhere while it drains. The backends are not
/// probed: a server outage would make every replica unready at once, and clients would get nothing instead of
/// the proxy's error naming the server.
async fn ready_endpoint(State(shared): State<Arc<ProxyState>>) -> (StatusCode, &'static str) {
    if shared.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// `GET /healthz`: 200 when both backends accept a TCP connection within [`HEALTH_TIMEOUT`], 503 otherwise; the
/// JSON body says which. Probes are reused for a second ([`HealthProbes`]).
async fn health_endpoint(State(state): State<AdminState>) -> (StatusCode, axum::Json<Health>) {
    let health = state.health.check(&state.shared).await;
    let status = if health.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(health))
}

/// Probes both backends of `snapshot` at once.
pub async fn check_health(snapshot: &ConfigSnapshot) -> Health {
    let backends = &snapshot.config.backends;
    let (edxapp, csmh) = tokio::join!(probe(&backends.edxapp.address), probe(&backends.csmh.address));
    Health { healthy: edxapp.reachable && csmh.reachable, backends: Backends { edxapp, csmh } }
}

/// Opens and closes a TCP connection to `address`.
async fn probe(address: &str) -> Probe {
    let error = match tokio::time::timeout(HEALTH_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no connection within {} ms", HEALTH_TIMEOUT.as_millis())),
    };
    Probe { address: address.to_owned(), reachable: error.is_none(), error }
}

/// `/config`'s answer: the configuration in force, without secrets (no user names, passwords or the variables
/// holding them).
#[derive(Debug, Serialize)]
pub struct ConfigView {
    /// The generation of the configuration in force.
    pub generation: u64,
    /// `[listen] address`.
    pub listen: String,
    /// `[admin] address`.
    pub admin: Option<String>,
    /// `[listen.tls]`; `None`: clients connect in plaintext only.
    pub listen_tls: Option<ListenTlsView>,
    /// `"one server"` or `"two servers"`.
    pub topology: &'static str,
    /// Each backend's address and connect timeout.
    pub backends: Backends<BackendView>,
    /// `[backends.edxapp.preconnect]` in force, and the connections ready now.
    pub preconnect: PreconnectView,
    /// `[backends.csmh] keep_idle` in force, and the connections to a separate `csmh` server kept now.
    pub csmh_kept: KeptView,
    /// The two history tables.
    pub tables: TablesView,
    /// Each flag under its edx-platform name.
    pub flags: FlagsView,
    /// The routing table's row the flags select (docs/routing.md, "From flags to a route").
    pub routing: RoutingView,
    /// The shadow comparison of merged reads (`[shadow]`) and its counts since the proxy started.
    pub shadow: ShadowView,
}

/// The shadow comparison as `/config` shows it (docs/routing.md, "Shadow comparison").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowView {
    /// `[shadow] sample`: the fraction of merged reads compared (0: off).
    pub sample: f64,
    /// The counts since the proxy started.
    #[serde(flatten)]
    pub counts: ShadowCounts,
}

/// TLS for clients: where its certificate is read from (never the key's content), and whether it is required.
#[derive(Debug, Serialize)]
pub struct ListenTlsView {
    /// The certificate file, or `self-signed`.
    pub certificate: String,
    /// Plaintext clients are refused.
    pub required: bool,
}

/// A backend without its credentials.
#[derive(Debug, Serialize)]
pub struct BackendView {
    /// `host:port`.
    pub address: String,
    /// Seconds to wait for a TCP connection.
    pub connect_timeout_secs: u64,
    /// `tls.mode` (`disabled`, `preferred`, `required`, `verify-ca`, `verify-identity`).
    pub tls_mode: &'static str,
    /// The addresses new connections use for the host name in `address` (docs/reliability.md, "Backends named
    /// by host name"): its last lookup's, or those kept through a failed one; `null` for an `ip:port` address,
    /// a name no connection has looked up yet, or one that never resolved.
    pub resolved: Option<Vec<String>>,
    /// Why the host name has no address (its lookups failed from the start); `null` otherwise.
    pub resolve_error: Option<String>,
}

/// The connections opened ahead of clients (docs/reliability.md, "Connections opened ahead"): the settings in
/// force and what the pool holds now.
#[derive(Debug, Serialize)]
pub struct PreconnectView {
    /// `max`: the most connections kept ready; 0 when preconnecting is off.
    pub max: usize,
    /// `max_age_ms`: how long a ready connection may wait for a client.
    pub max_age_ms: u64,
    /// How many the pool keeps ready now, from the recent rate of new clients.
    pub target: i64,
    /// Connections ready now.
    pub ready: i64,
}

/// The connections to a separate `csmh` server kept between sessions (docs/reliability.md, "Connections kept
/// between sessions"): the setting in force and how many are kept now.
#[derive(Debug, Serialize)]
pub struct KeptView {
    /// `keep_idle`: the most kept; 0 when none is, and on one server.
    pub keep_idle: usize,
    /// Connections kept now.
    pub kept: i64,
}

/// The history tables' schema-qualified names.
#[derive(Debug, Serialize)]
pub struct TablesView {
    /// The table edxapp writes.
    pub old: String,
    /// The extended table.
    pub extended: String,
}

/// The flags, under their `proxy.toml` keys (also read back from other proxies by [`crate::fleet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagsView {
    /// `ENABLE_CSMH_EXTENDED`.
    #[serde(rename = "ENABLE_CSMH_EXTENDED")]
    pub enable_csmh_extended: bool,
    /// `ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES`.
    #[serde(rename = "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES")]
    pub enable_reading_from_multiple_history_tables: bool,
    /// `READ_ONLY_FROM_CSMHE`.
    #[serde(rename = "READ_ONLY_FROM_CSMHE")]
    pub read_only_from_csmhe: bool,
}

/// The routing table in force.
#[derive(Debug, Serialize)]
pub struct RoutingView {
    /// The stage, as an identifier (`old_table_only`, `extended_table_reading_both`,
    /// `extended_table_only_reads`, `old_table_retired`).
    pub stage: &'static str,
    /// The stage, in words, with the flags that select it.
    pub stage_name: &'static str,
    /// Where each kind of statement naming the old table goes.
    pub routes: Vec<RouteView>,
}

/// Where one kind of statement goes.
#[derive(Debug, Serialize)]
pub struct RouteView {
    /// The kind of statement (`INSERT`, `SELECT`, `UPDATE, DELETE`, `anything else`).
    pub statements: &'static str,
    /// The target, as an identifier (`old_table`, `extended_table`, `both_tables`, `blocked`).
    pub target: &'static str,
    /// The target, in words.
    pub description: &'static str,
}

/// `GET /config`: the configuration in force.
async fn config_endpoint(State(shared): State<Arc<ProxyState>>) -> axum::Json<ConfigView> {
    axum::Json(config_view(&shared.snapshot(), &shared.metrics, &shared.resolver))
}

/// What `/config` shows of `snapshot`, with what `metrics` count (the shadow comparison's results, the pools'
/// state) and what the backends' names resolve to.
pub fn config_view(snapshot: &ConfigSnapshot, metrics: &Metrics, resolver: &Resolver) -> ConfigView {
    let config = &snapshot.config;
    let table = snapshot.router.table();
    let routes = StatementKind::ALL
        .into_iter()
        .map(|kind| {
            let target = table.route(kind);
            RouteView { statements: kind.label(), target: target_id(target), description: target.describe() }
        })
        .collect();
    ConfigView {
        generation: snapshot.generation,
        listen: config.listen.address.clone(),
        admin: config.admin.as_ref().map(|admin| admin.address.clone()),
        listen_tls: config
            .listen
            .tls
            .as_ref()
            .map(|tls| ListenTlsView { certificate: tls.certificate.describe(), required: tls.required }),
        topology: Topology::of(&config.backends).name(),
        backends: Backends {
            edxapp: backend_view(&config.backends.edxapp, resolver),
            csmh: backend_view(&config.backends.csmh, resolver),
        },
        preconnect: preconnect_view(config.backends.edxapp_preconnect(), metrics.preconnect()),
        csmh_kept: KeptView { keep_idle: kept_in_force(config), kept: metrics.kept().kept.get() },
        tables: TablesView { old: config.history.old_table.clone(), extended: config.history.extended_table.clone() },
        flags: FlagsView {
            enable_csmh_extended: config.flags.is_on(Flag::EnableCsmhExtended),
            enable_reading_from_multiple_history_tables: config
                .flags
                .is_on(Flag::EnableReadingFromMultipleHistoryTables),
            read_only_from_csmhe: config.flags.is_on(Flag::ReadOnlyFromCsmhe),
        },
        routing: RoutingView { stage: stage_id(table.stage()), stage_name: table.stage().name(), routes },
        shadow: ShadowView { sample: config.shadow.sample, counts: metrics.shadow().counts() },
    }
}

fn backend_view(backend: &Backend, resolver: &Resolver) -> BackendView {
    let (resolved, resolve_error) = match resolver.resolved(&backend.address) {
        None => (None, None),
        Some(Ok(addresses)) => (Some(addresses.iter().map(ToString::to_string).collect()), None),
        Some(Err(error)) => (None, Some(error)),
    };
    BackendView {
        address: backend.address.clone(),
        connect_timeout_secs: backend.connect_timeout_secs,
        tls_mode: backend.tls.mode.as_str(),
        resolved,
        resolve_error,
    }
}

/// `[backends.csmh] keep_idle` as it acts: 0 on one server, where the proxy has no `csmh` connection of its own.
fn kept_in_force(config: &Config) -> usize {
    match Topology::of(&config.backends) {
        Topology::OneServer => 0,
        Topology::TwoServers => config.backends.csmh_keep_idle(),
    }
}

fn preconnect_view(settings: Preconnect, pool: &PreconnectCounters) -> PreconnectView {
    PreconnectView {
        max: settings.max,
        max_age_ms: settings.max_age_ms,
        target: pool.target.get(),
        ready: pool.ready.get(),
    }
}

fn stage_id(stage: Stage) -> &'static str {
    match stage {
        Stage::OldTableOnly => "old_table_only",
        Stage::ExtendedTableReadingBoth => "extended_table_reading_both",
        Stage::ExtendedTableOnlyReads => "extended_table_only_reads",
        Stage::OldTableRetired => "old_table_retired",
    }
}

fn target_id(target: Target) -> &'static str {
    match target {
        Target::OldTable => "old_table",
        Target::ExtendedTable => "extended_table",
        Target::BothTables => "both_tables",
        Target::Blocked => "blocked",
    }
}

/// Which of the proxy's own probes `csmh-proxy healthcheck` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthProbe {
    /// `/livez`: the process serves.
    Livez,
    /// `/readyz`: it accepts clients and is not shutting down.
    Readyz,
}

impl HealthProbe {
    fn path(self) -> &'static str {
        match self {
            HealthProbe::Livez => "/livez",
            HealthProbe::Readyz => "/readyz",
        }
    }
}

/// Why `csmh-proxy healthcheck` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The configuration has no `[admin]` listener to ask.
    #[error("no [admin] address in the configuration: the probes are served by the admin listener")]
    NoAdmin,
    /// The admin listener could not be reached or did not answer in time.
    #[error("{address}: {source}")]
    Unreachable {
        /// Where it was asked.
        address: String,
        /// What failed.
        source: io::Error,
    },
    /// It answered with another status than 200.
    #[error("{address}{path} answered {status}")]
    NotOk {
        /// Where it was asked.
        address: String,
        /// The probe's path.
        path: &'static str,
        /// The answer's status code.
        status: u16,
    },
}

/// How long `csmh-proxy healthcheck` waits for the whole answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the running proxy's admin listener at `admin` (`[admin] address`; a wildcard host is asked on loopback)
/// for `probe`, as a container's exec health check does: `Ok` on a 200.
///
/// A request this small is written by hand rather than with an HTTP client crate: the image has no shell or
/// curl, and the binary needs only one status line.
pub async fn probe_self(admin: &str, probe: HealthProbe) -> Result<(), ProbeError> {
    let address = loopback_for_wildcard(admin);
    let unreachable = |source| ProbeError::Unreachable { address: address.clone(), source };
    let (status, _) = match tokio::time::timeout(PROBE_TIMEOUT, http_get(&address, probe.path())).await {
        Ok(answer) => answer.map_err(unreachable)?,
        Err(_) => return Err(unreachable(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))),
    };
    if status == 200 { Ok(()) } else { Err(ProbeError::NotOk { address, path: probe.path(), status }) }
}

/// The largest answer [`http_get`] reads.
const MAX_ANSWER: u64 = 1 << 20;

/// `GET path` from another proxy's admin listener at `address` (or this one's): the status code and the body.
///
/// The admin listener's own answers are all this client reads (one status line, a small body, the connection
/// closed after it), so it is written by hand rather than with an HTTP client crate: the container image has no
/// shell or curl, and the binary needs no more.
pub async fn http_get(address: &str, path: &str) -> io::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer");
    let head_end = answer.windows(4).position(|window| window == b"\r\n\r\n").ok_or_else(malformed)?;
    let status_line = String::from_utf8_lossy(&answer[..head_end]).lines().next().unwrap_or_default().to_owned();
    let status = status_line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(malformed)?;
    Ok((status, answer[head_end + 4..].to_vec()))
}

/// `admin` with a wildcard host (`0.0.0.0`, `[::]`) replaced by the loopback address of its family.
fn loopback_for_wildcard(admin: &str) -> String {
    match admin.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => admin.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SERVERS: &str = r#"
[listen]
address = "127.0.0.1:6033"

[admin]
address = "127.0.0.1:6080"

[backends.edxapp]
address = "127.0.0.1:3306"

[backends.csmh]
address = "127.0.0.1:3307"
user = "csmh_writer"
password = "not-to-be-shown"

[flags]
ENABLE_CSMH_EXTENDED = true
ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES = true
"#;

    fn snapshot(text: &str) -> ConfigSnapshot {
        let config = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
        ConfigSnapshot::compile(config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_config_view_shows_flags_and_routing_but_no_secrets() {
        let view = config_view(&snapshot(TWO_SERVERS), &Metrics::default(), &Resolver::default());
        let json = serde_json::to_string(&view).unwrap_or_default();
        assert!(!json.contains("not-to-be-shown") && !json.contains("csmh_writer"), "{json}");
        assert_eq!(view.generation, 1);
        assert_eq!(view.topology, "two servers");
        assert_eq!(view.admin.as_deref(), Some("127.0.0.1:6080"));
        assert!(view.flags.enable_reading_from_multiple_history_tables && !view.flags.read_only_from_csmhe);
        assert_eq!(view.routing.stage, "extended_table_reading_both");
        let targets: Vec<(&str, &str)> = view.routing.routes.iter().map(|r| (r.statements, r.target)).collect();
        assert_eq!(
            targets,
            [
                ("INSERT", "extended_table"),
                ("SELECT", "both_tables"),
                ("UPDATE, DELETE", "both_tables"),
                ("anything else", "old_table")
            ]
        );
        assert!(json.contains("\"ENABLE_CSMH_EXTENDED\":true"), "{json}");
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy_and_says_why() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let open = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let closed = {
            let gone = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
            gone.local_addr().unwrap_or_else(|e| panic!("{e}"))
        };
        let text =
            TWO_SERVERS.replace("127.0.0.1:3306", &open.to_string()).replace("127.0.0.1:3307", &closed.to_string());
        let health = check_health(&snapshot(&text)).await;
        assert!(!health.healthy);
        assert!(health.backends.edxapp.reachable && health.backends.edxapp.error.is_none());
        assert!(!health.backends.csmh.reachable && health.backends.csmh.error.is_some());
    }
}
