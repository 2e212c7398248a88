//! The proxy's metrics, in Prometheus form: a registry per proxy (no process globals, so tests run proxies side
//! by side), rendered in the Prometheus text format by the admin listener's `/metrics`.
//!
//! The per-statement path stays cheap: every labelled series is created up front and kept in an array indexed by
//! its label, so counting a statement is one relaxed atomic add and timing it a few more (the latency histogram
//! is lock-free), with no lock and no allocation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::protocol::conn::TlsHandshake;
use crate::routing::{CacheOutcome, Classified, Route};
use crate::topology::Server;

/// The `Content-Type` of [`Metrics::render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds, in seconds, of the latency histograms' buckets: 100 µs to 10 s, roughly ×2.5 apart.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The route a statement (COM_QUERY or COM_STMT_PREPARE) took, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteLabel {
    /// Relayed untouched because its text cannot name the history table (a pre-filter miss).
    PassthroughMiss,
    /// Its text names the history table (a pre-filter hit), but the router let it pass untouched.
    PassthroughHit,
    /// Sent to the extended table instead of the old one.
    Rewrite,
    /// Run against both tables.
    FanOut,
    /// Refused with 1142 because the old table is retired.
    Block,
    /// Refused with 1235 because the proxy cannot carry it out exactly.
    Refuse,
}

impl RouteLabel {
    /// Every label, in the order of the metrics' arrays.
    pub const ALL: [RouteLabel; 6] = [
        RouteLabel::PassthroughMiss,
        RouteLabel::PassthroughHit,
        RouteLabel::Rewrite,
        RouteLabel::FanOut,
        RouteLabel::Block,
        RouteLabel::Refuse,
    ];

    /// The label of a statement as the router classified it.
    pub fn of(classified: &Classified) -> RouteLabel {
        let route = match classified {
            Classified::Unnamed => return RouteLabel::PassthroughMiss,
            Classified::Named(route) => route,
        };
        match route {
            Route::Passthrough => RouteLabel::PassthroughHit,
            Route::Rewrite(_) => RouteLabel::Rewrite,
            Route::FanOut(_) => RouteLabel::FanOut,
            Route::Block(_) => RouteLabel::Block,
            Route::Refuse(_) => RouteLabel::Refuse,
        }
    }

    /// The `route` label's value.
    pub fn route(self) -> &'static str {
        match self {
            RouteLabel::PassthroughMiss | RouteLabel::PassthroughHit => "passthrough",
            RouteLabel::Rewrite => "rewrite",
            RouteLabel::FanOut => "fanout",
            RouteLabel::Block => "block",
            RouteLabel::Refuse => "refuse",
        }
    }

    /// The `prefilter` label's value: whether the statement's text names the history table.
    pub fn prefilter(self) -> &'static str {
        match self {
            RouteLabel::PassthroughMiss => "miss",
            _ => "hit",
        }
    }

    fn labels(self) -> Labels<2> {
        [("route", self.route()), ("prefilter", self.prefilter())]
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn backend_index(server: Server) -> usize {
    match server {
        Server::Edxapp => 0,
        Server::Csmh => 1,
    }
}

/// The index of `kind`'s counter, in [`TLS_HANDSHAKES`]' order.
fn handshake_index(kind: TlsHandshake) -> usize {
    match kind {
        TlsHandshake::Full => 0,
        TlsHandshake::Resumed => 1,
    }
}

/// The `kind` label of a TLS handshake.
fn handshake_label(kind: TlsHandshake) -> &'static str {
    match kind {
        TlsHandshake::Full => "full",
        TlsHandshake::Resumed => "resumed",
    }
}

/// The `reason` labels of refused connections: the limit that was reached.
pub const REFUSAL_REASONS: [&str; 2] = ["max_connections", "max_handshakes"];

/// The `leg` labels of the connections counted by transport: the client's, and the proxy's to each backend.
pub const LEGS: [&str; 3] = ["client", "edxapp", "csmh"];

/// A label set of `N` fixed pairs.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The configuration's state, read from [`crate::state::ProxyState`] when the metrics are rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigState {
    /// The generation of the configuration in force (1 for the one the proxy started with).
    pub generation: u64,
    /// Reloads that put a new configuration in force.
    pub reloads_applied: u64,
    /// Reloads refused because the new file was invalid.
    pub reloads_rejected: u64,
}

/// The proxy's metrics: a registry of its own and a handle on every series.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_total: Counter,
    connections_open: Gauge,
    connections_refused: [Counter; 2],
    statements: [Counter; 6],
    latency: [Histogram; 6],
    connect_errors: [Counter; 2],
    query_errors: [Counter; 2],
    client_hangups: Counter,
    /// Setup statements answered early, then those whose server's answer differed from the one given.
    settings_early: [Counter; 2],
    /// By leg ([`LEGS`]), then plaintext and TLS.
    transports: [[Counter; 2]; 3],
    /// By backend ([`Server::BOTH`]), then by [`TLS_HANDSHAKES`].
    tls_handshakes: [[Counter; 2]; 2],
    reloads_applied: Counter,
    reloads_rejected: Counter,
    generation: Gauge,
    shadow: ShadowCounters,
    preconnect: PreconnectCounters,
    kept: KeptCounters,
    resolver: ResolverCounters,
    /// By [`CacheOutcome::ALL`]'s order.
    route_cache: [Counter; 3],
}

/// What became of the connections opened ahead of clients ([`crate::preconnect`]), and how many are ready; clones
/// count into the same series.
#[derive(Debug, Clone, Default)]
pub struct PreconnectCounters {
    /// A client logged in on it.
    pub used: Counter,
    /// Closed unused at its `max_age_ms`; the server counts it in `Aborted_connects`.
    pub expired: Counter,
    /// The server closed it (or spoke) before a client took it.
    pub lost: Counter,
    /// Closed unused because the configuration named another server, or the proxy stopped.
    pub discarded: Counter,
    /// Opening one failed: no connection, or the server refused it in its greeting.
    pub failed: Counter,
    /// Clients that found none ready while preconnecting was on, and connected themselves.
    pub misses: Counter,
    /// Connections ready now.
    pub ready: Gauge,
    /// How many the proxy keeps ready now, from the recent rate of new clients.
    pub target: Gauge,
}

/// What became of the connections to a separate `csmh` server kept between sessions ([`crate::csmh_pool`]), and
/// how many are kept; clones count into the same series.
#[derive(Debug, Clone, Default)]
pub struct KeptCounters {
    /// A session took it.
    pub reused: Counter,
    /// Closed unused after [`crate::csmh_pool::KEPT_FOR`].
    pub expired: Counter,
    /// The server closed it (or spoke) while it was kept, or it failed when a session first used it.
    pub lost: Counter,
    /// Closed unused: beyond `keep_idle`, or kept under an earlier configuration.
    pub discarded: Counter,
    /// Connections kept now.
    pub kept: Gauge,
}

/// The lookups of the backends' host names ([`crate::resolver`]); clones count into the same series.
#[derive(Debug, Clone, Default)]
pub struct ResolverCounters {
    /// The name was looked up and had addresses.
    pub resolved: Counter,
    /// The lookup failed; the addresses the name had before were used.
    pub stale: Counter,
    /// The lookup failed, and the connection with it.
    pub failed: Counter,
}

/// The TLS handshakes counted, in the order of their counters.
const TLS_HANDSHAKES: [TlsHandshake; 2] = [TlsHandshake::Full, TlsHandshake::Resumed];

/// The `result` label of [`ResolverCounters`], in its fields' order.
const RESOLVER_RESULTS: [&str; 3] = ["resolved", "stale", "failed"];

/// The `outcome` label of [`PreconnectCounters`]' connections, in its fields' order.
const PRECONNECT_OUTCOMES: [&str; 5] = ["used", "expired", "lost", "discarded", "failed"];

/// The `outcome` label of [`KeptCounters`]' connections, in its fields' order.
const KEPT_OUTCOMES: [&str; 4] = ["reused", "expired", "lost", "discarded"];

/// The `result` label of the shadow comparison's counts, in [`ShadowCounters`]' order.
const SHADOW_RESULTS: [&str; 5] = ["matching", "differing", "inconclusive", "skipped", "failed"];

/// The shadow comparison's counts ([`crate::shadow`]), by how a sampled read ended; clones count into the same
/// series.
#[derive(Debug, Clone, Default)]
pub struct ShadowCounters {
    /// The extended table alone gave the client's answer.
    pub matching: Counter,
    /// It would have left out or changed rows the client got.
    pub differing: Counter,
    /// It gave only newer rows, or the same rows in another order: likely a write between the two reads.
    pub inconclusive: Counter,
    /// Sampled but not compared: the worker was behind, the answer too large, or the read not one statement
    /// in the next stage.
    pub skipped: Counter,
    /// The comparison could not run (the shadow read failed).
    pub failed: Counter,
    /// When the last differing read was counted, and how many reads had been compared then (it included).
    last_differing: Arc<std::sync::Mutex<Option<(std::time::Instant, u64)>>>,
}

impl ShadowCounters {
    /// Counts a differing read, and remembers when it was.
    pub fn differed(&self) {
        self.differing.inc();
        let compared = self.compared();
        *self.last_differing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), compared));
    }

    /// Reads compared so far.
    fn compared(&self) -> u64 {
        self.matching.get() + self.differing.get() + self.inconclusive.get()
    }

    /// The counts now.
    pub fn counts(&self) -> ShadowCounts {
        let compared = self.compared();
        let last = *self.last_differing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ShadowCounts {
            compared,
            matching: self.matching.get(),
            differing: self.differing.get(),
            inconclusive: self.inconclusive.get(),
            skipped: self.skipped.get(),
            failed: self.failed.get(),
            last_differing_seconds_ago: last.map(|(at, _)| at.elapsed().as_secs()),
            compared_since_last_differing: compared - last.map_or(0, |(_, then)| then),
        }
    }
}

/// The shadow comparison's counts at one moment, as `/config`, `fleet` and `status --json` show them (and add
/// up over proxies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShadowCounts {
    /// Reads compared: `matching` + `differing` + `inconclusive`.
    pub compared: u64,
    /// The extended table alone gave the client's answer.
    pub matching: u64,
    /// The extended table alone would have left out or changed rows the client got.
    pub differing: u64,
    /// Only newer rows, or another order: likely a write between the two reads.
    pub inconclusive: u64,
    /// Sampled but not compared.
    pub skipped: u64,
    /// The shadow read failed.
    pub failed: u64,
    /// Seconds since the last differing read (`None`: none since the proxy started). Over several proxies, the
    /// most recent; a proxy too old to say, with differing reads, counts as one just now.
    #[serde(default)]
    pub last_differing_seconds_ago: Option<u64>,
    /// Reads compared after the last differing one (all of them when none differed): the evidence that the
    /// extended table alone answers reads since. Over several proxies, added up, each since its own last one.
    #[serde(default)]
    pub compared_since_last_differing: u64,
}

impl ShadowCounts {
    /// Seconds since the last differing read, a proxy that does not say when (older than the field) counting as
    /// just now.
    fn last_differing_or_now(&self) -> Option<u64> {
        self.last_differing_seconds_ago.or((self.differing > 0).then_some(0))
    }
}

impl std::ops::AddAssign for ShadowCounts {
    fn add_assign(&mut self, other: ShadowCounts) {
        let last_differing = [self.last_differing_or_now(), other.last_differing_or_now()].into_iter().flatten().min();
        self.compared += other.compared;
        self.matching += other.matching;
        self.differing += other.differing;
        self.inconclusive += other.inconclusive;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.last_differing_seconds_ago = last_differing;
        self.compared_since_last_differing += other.compared_since_last_differing;
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every series at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("csmh_proxy");
        let connections_total = Counter::default();
        registry.register("connections", "Client connections accepted", connections_total.clone());
        let connections_open = Gauge::default();
        registry.register("connections_open", "Client connections open now", connections_open.clone());
        let refused = Family::<Labels<1>, Counter>::default();
        let connections_refused = REFUSAL_REASONS.map(|reason| refused.get_or_create(&[("reason", reason)]).clone());
        registry.register(
            "connections_refused",
            "Client connections refused with error 1040 before a backend connection was opened, by the limit \
             reached (listen.max_connections, listen.max_handshakes)",
            refused,
        );

        let statements = Family::<Labels<2>, Counter>::default();
        let latency = Family::<Labels<2>, Histogram>::default();
        let statement_counters = RouteLabel::ALL.map(|label| statements.get_or_create(&label.labels()).clone());
        let histograms = RouteLabel::ALL.map(|label| latency.get_or_create(&label.labels()).clone());
        registry.register(
            "statements",
            "Statements (COM_QUERY, COM_STMT_PREPARE) by route, counted when their response has been relayed",
            statements,
        );
        registry.register_with_unit(
            "statement_duration",
            "Time from a statement's arrival to the end of its response, by route",
            Unit::Seconds,
            latency,
        );

        let (connect_errors, connect_family) = backend_counters();
        registry.register(
            "backend_connect_errors",
            "Failed attempts to connect (and, for csmh, log in) to a backend",
            connect_family,
        );
        let (query_errors, query_family) = backend_counters();
        registry.register(
            "backend_query_errors",
            "Statements during which a backend connection failed (lost, or broke the protocol); not SQL errors",
            query_family,
        );

        let settings_early = Family::<Labels<1>, Counter>::default();
        let settings_early_counters =
            ["answered", "diverged"].map(|result| settings_early.get_or_create(&[("result", result)]).clone());
        registry.register(
            "settings_answered_early",
            "Setup statements (SET NAMES, SET autocommit, the isolation level, sql_mode) at the start of a session, \
             by result: answered (by the proxy, with the server's answer learned earlier, and sent on with the \
             session's next command), diverged (the server then answered otherwise; its answers are learned again)",
            settings_early,
        );
        let client_hangups = Counter::default();
        registry.register(
            "client_hangups",
            "Requests abandoned because the client closed its connection while they were in flight; their backend \
             connections were closed at once, so the servers end the statements",
            client_hangups.clone(),
        );

        let transport = Family::<Labels<2>, Counter>::default();
        let transports = LEGS.map(|leg| {
            ["plaintext", "tls"].map(|kind| transport.get_or_create(&[("leg", leg), ("transport", kind)]).clone())
        });
        registry.register(
            "connections_by_transport",
            "Logins by leg (the client's connection to the proxy, the proxy's to edxapp and to csmh) and transport \
             (plaintext or tls)",
            transport,
        );

        let handshakes = Family::<Labels<2>, Counter>::default();
        let tls_handshakes = Server::BOTH.map(|server| {
            TLS_HANDSHAKES.map(|kind| {
                handshakes.get_or_create(&[("backend", server.name()), ("kind", handshake_label(kind))]).clone()
            })
        });
        registry.register(
            "backend_tls_handshakes",
            "TLS handshakes of the connections the proxy opens to a backend for its clients, by kind: full, or \
             resumed (the session of an earlier connection to the server: no certificate signed or checked)",
            handshakes,
        );

        let reloads = Family::<Labels<1>, Counter>::default();
        let reloads_applied = reloads.get_or_create(&[("result", "applied")]).clone();
        let reloads_rejected = reloads.get_or_create(&[("result", "rejected")]).clone();
        registry.register("config_reloads", "Configuration reloads, applied or rejected", reloads);
        let generation = Gauge::default();
        registry.register("config_generation", "Generation of the configuration in force", generation.clone());

        let shadow_reads = Family::<Labels<1>, Counter>::default();
        // One statement per series: `get_or_create`'s guard lives to the end of its statement, and creating the
        // next series while it is held would deadlock.
        let [matching, differing, inconclusive, skipped, failed] =
            SHADOW_RESULTS.map(|result| shadow_reads.get_or_create(&[("result", result)]).clone());
        let shadow = ShadowCounters { matching, differing, inconclusive, skipped, failed, ..Default::default() };
        registry.register(
            "shadow_reads",
            "Merged history reads sampled by [shadow] and answered from the extended table alone too, by result: \
             matching, differing (rows the client got would be missing or changed), inconclusive (only newer rows \
             or another order), skipped (not compared), failed",
            shadow_reads,
        );

        let preconnect = preconnect_counters(&mut registry);
        let kept = kept_counters(&mut registry);
        let lookups = Family::<Labels<1>, Counter>::default();
        let [resolved, stale, failed] =
            RESOLVER_RESULTS.map(|result| lookups.get_or_create(&[("result", result)]).clone());
        let resolver = ResolverCounters { resolved, stale, failed };
        registry.register(
            "backend_dns_lookups",
            "Lookups of backend host names (one at a time per name, again after 10 s, or 1 s after a failure, or \
             after a failed connect), by result: resolved, stale (the lookup failed or got no answer within 2 s, and \
             the name's earlier addresses were used), failed",
            lookups,
        );
        let route_cache = Family::<Labels<1>, Counter>::default();
        let route_cache_counters =
            CacheOutcome::ALL.map(|outcome| route_cache.get_or_create(&[("result", outcome.label())]).clone());
        registry.register(
            "route_cache",
            "History statements (COM_QUERY, COM_STMT_PREPARE naming the history table) by how the route cache served \
             them: hit (routed from the cache), miss (parsed and routed), skipped (not looked up: prepared, too long, \
             or text the cache's scanner is not sure of)",
            route_cache,
        );

        Metrics {
            registry,
            connections_total,
            connections_open,
            connections_refused,
            statements: statement_counters,
            latency: histograms,
            connect_errors,
            query_errors,
            client_hangups,
            settings_early: settings_early_counters,
            transports,
            tls_handshakes,
            reloads_applied,
            reloads_rejected,
            generation,
            shadow,
            preconnect,
            kept,
            resolver,
            route_cache: route_cache_counters,
        }
    }

    /// The counters of connections opened ahead of clients.
    pub fn preconnect(&self) -> &PreconnectCounters {
        &self.preconnect
    }

    /// The counters of the connections to the `csmh` server kept between sessions.
    pub fn kept(&self) -> &KeptCounters {
        &self.kept
    }

    /// The counters of the backends' host name lookups.
    pub fn resolver(&self) -> &ResolverCounters {
        &self.resolver
    }

    /// The shadow comparison's counters.
    pub fn shadow(&self) -> &ShadowCounters {
        &self.shadow
    }

    /// A client connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_total.inc();
        self.connections_open.inc();
    }

    /// A client logged in over `tls` or plaintext.
    pub fn client_connection(&self, tls: bool) {
        self.transports[0][usize::from(tls)].inc();
    }

    /// The proxy logged in to `server` in plaintext (`tls` is `None`) or after a TLS handshake of that kind.
    pub fn backend_connection(&self, server: Server, tls: Option<TlsHandshake>) {
        self.transports[1 + backend_index(server)][usize::from(tls.is_some())].inc();
        if let Some(kind) = tls {
            self.tls_handshakes[backend_index(server)][handshake_index(kind)].inc();
        }
    }

    /// TLS handshakes of that `kind` so far on connections to `server`.
    pub fn backend_tls_handshakes(&self, server: Server, kind: TlsHandshake) -> u64 {
        self.tls_handshakes[backend_index(server)][handshake_index(kind)].get()
    }

    /// Logins so far on `leg` (one of [`LEGS`]) over TLS (`tls`) or plaintext.
    pub fn connections_by_transport(&self, leg: &str, tls: bool) -> u64 {
        LEGS.iter().position(|known| *known == leg).map_or(0, |i| self.transports[i][usize::from(tls)].get())
    }

    /// A client connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// A client connection was refused because of the limit `reason` names (see [`REFUSAL_REASONS`]).
    pub fn connection_refused(&self, reason: &'static str) {
        if let Some(index) = REFUSAL_REASONS.iter().position(|known| *known == reason) {
            self.connections_refused[index].inc();
        }
    }

    /// Client connections refused so far because of the limit `reason` names.
    pub fn connections_refused(&self, reason: &str) -> u64 {
        REFUSAL_REASONS.iter().position(|known| *known == reason).map_or(0, |i| self.connections_refused[i].get())
    }

    /// Client connections accepted so far.
    pub fn connections_total(&self) -> u64 {
        self.connections_total.get()
    }

    /// Client connections open now.
    pub fn connections_open(&self) -> u64 {
        u64::try_from(self.connections_open.get()).unwrap_or(0)
    }

    /// A statement that took `route` has been answered, `took` after it arrived.
    #[inline]
    pub fn statement(&self, route: RouteLabel, took: Duration) {
        self.statements[route.index()].inc();
        self.latency[route.index()].observe(took);
    }

    /// Statements answered so far that took `route`.
    pub fn statements(&self, route: RouteLabel) -> u64 {
        self.statements[route.index()].get()
    }

    /// A connection attempt to the `server` backend failed.
    pub fn backend_connect_error(&self, server: Server) {
        self.connect_errors[backend_index(server)].inc();
    }

    /// The connection to the `server` backend failed during a statement.
    pub fn backend_query_error(&self, server: Server) {
        self.query_errors[backend_index(server)].inc();
    }

    /// Failed connection attempts to the `server` backend so far.
    pub fn backend_connect_errors(&self, server: Server) -> u64 {
        self.connect_errors[backend_index(server)].get()
    }

    /// Backend connection failures during statements on `server` so far.
    pub fn backend_query_errors(&self, server: Server) -> u64 {
        self.query_errors[backend_index(server)].get()
    }

    /// The route cache served a statement as `outcome` says.
    #[inline]
    pub fn route_cache(&self, outcome: CacheOutcome) {
        self.route_cache[outcome as usize].inc();
    }

    /// Statements the route cache served as `outcome` says, so far.
    pub fn route_cache_count(&self, outcome: CacheOutcome) -> u64 {
        self.route_cache[outcome as usize].get()
    }

    /// A client closed its connection while a request of its was in flight.
    pub fn client_hangup(&self) {
        self.client_hangups.inc();
    }

    /// A setup statement was answered early.
    pub fn setting_answered_early(&self) {
        self.settings_early[0].inc();
    }

    /// A server answered a setup statement sent ahead otherwise than the answer its client was given.
    pub fn setting_answer_diverged(&self) {
        self.settings_early[1].inc();
    }

    /// Setup statements answered early so far, and those the server then answered otherwise.
    pub fn settings_answered_early(&self) -> [u64; 2] {
        self.settings_early.each_ref().map(Counter::get)
    }

    /// Requests abandoned so far because their client hung up.
    pub fn client_hangups(&self) -> u64 {
        self.client_hangups.get()
    }

    /// Every series in the Prometheus text format, with the configuration's state as `config` says.
    pub fn render(&self, config: ConfigState) -> Result<String, fmt::Error> {
        // Concurrent scrapes may read the state in either order: only ever move the values forward.
        self.reloads_applied.inner().fetch_max(config.reloads_applied, Ordering::Relaxed);
        self.reloads_rejected.inner().fetch_max(config.reloads_rejected, Ordering::Relaxed);
        let generation = i64::try_from(config.generation).unwrap_or(i64::MAX);
        self.generation.inner().fetch_max(generation, Ordering::Relaxed);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The preconnect series, registered in `registry`.
fn preconnect_counters(registry: &mut Registry) -> PreconnectCounters {
    let connections = Family::<Labels<1>, Counter>::default();
    // One statement per series: see the shadow counters above.
    let [used, expired, lost, discarded, failed] =
        PRECONNECT_OUTCOMES.map(|outcome| connections.get_or_create(&[("outcome", outcome)]).clone());
    registry.register(
        "preconnect_connections",
        "Connections to edxapp opened ahead of clients, by outcome: used (a client logged in on it), expired \
         (closed unused at max_age_ms; the server counts an aborted connect), lost (the server closed it first), \
         discarded (another server configured, or shutdown), failed (could not be opened)",
        connections,
    );
    let counters = PreconnectCounters { used, expired, lost, discarded, failed, ..PreconnectCounters::default() };
    registry.register(
        "preconnect_misses",
        "Clients that found no connection ready while preconnecting was on, and waited for their own",
        counters.misses.clone(),
    );
    registry.register("preconnect_ready", "Connections to edxapp ready for the next clients", counters.ready.clone());
    registry.register(
        "preconnect_target",
        "How many connections to edxapp the proxy keeps ready, from the recent rate of new clients",
        counters.target.clone(),
    );
    counters
}

/// The series of the `csmh` connections kept between sessions, registered in `registry`.
fn kept_counters(registry: &mut Registry) -> KeptCounters {
    let connections = Family::<Labels<1>, Counter>::default();
    let [reused, expired, lost, discarded] =
        KEPT_OUTCOMES.map(|outcome| connections.get_or_create(&[("outcome", outcome)]).clone());
    registry.register(
        "csmh_kept_connections",
        "Connections to a separate csmh server kept between client sessions, by outcome: reused (a session took \
         it), expired (closed unused after 30-45 s), lost (the server closed it first, or it failed on first use), \
         discarded (beyond keep_idle, or kept under an earlier configuration)",
        connections,
    );
    let counters = KeptCounters { reused, expired, lost, discarded, ..KeptCounters::default() };
    registry.register(
        "csmh_kept",
        "Connections to a separate csmh server kept for the next sessions",
        counters.kept.clone(),
    );
    counters
}

/// A counter per backend, and the family they are registered in.
fn backend_counters() -> ([Counter; 2], Family<Labels<1>, Counter>) {
    let family = Family::<Labels<1>, Counter>::default();
    let counters = Server::BOTH.map(|server| family.get_or_create(&[("backend", server.name())]).clone());
    (counters, family)
}

/// A latency histogram with [`LATENCY_BUCKETS`], observed with atomic adds only (prometheus-client's own
/// histogram takes a lock per observation).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    inner: Arc<HistogramCounts>,
}

/// The counts behind a [`Histogram`].
#[derive(Debug, Default)]
struct HistogramCounts {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// The sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation of `took`.
    #[inline]
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(LATENCY_BUCKETS.len());
        self.inner.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }

    /// The count of each bucket (not cumulative: the encoder adds them up) by upper bound, ending with `+Inf`,
    /// and their total.
    fn buckets(&self) -> (Vec<(f64, u64)>, u64) {
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> =
            bounds.zip(&self.inner.buckets).map(|(bound, count)| (bound, count.load(Ordering::Relaxed))).collect();
        let total = buckets.iter().map(|(_, count)| count).sum();
        (buckets, total)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let (buckets, count) = self.buckets();
        let sum = Duration::from_nanos(self.inner.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(metrics: &Metrics) -> String {
        metrics.render(ConfigState { generation: 3, reloads_applied: 2, reloads_rejected: 1 }).unwrap_or_default()
    }

    #[test]
    fn observations_fall_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_micros(100));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let (buckets, count) = histogram.buckets();
        assert_eq!(count, 4);
        assert_eq!(histogram.count(), 4);
        assert_eq!(buckets.first(), Some(&(0.0001, 2)), "100 µs is in the 100 µs bucket");
        assert_eq!(buckets.iter().find(|(bound, _)| *bound == 0.005), Some(&(0.005, 1)));
        assert_eq!(buckets.iter().find(|(bound, _)| *bound == 10.0), Some(&(10.0, 0)));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn every_series_is_rendered_from_the_start() {
        let text = rendered(&Metrics::new());
        for line in [
            "csmh_proxy_connections_total 0",
            "csmh_proxy_connections_open 0",
            "csmh_proxy_statements_total{route=\"passthrough\",prefilter=\"miss\"} 0",
            "csmh_proxy_statements_total{route=\"refuse\",prefilter=\"hit\"} 0",
            "csmh_proxy_statement_duration_seconds_count{route=\"fanout\",prefilter=\"hit\"} 0",
            "csmh_proxy_backend_connect_errors_total{backend=\"csmh\"} 0",
            "csmh_proxy_backend_query_errors_total{backend=\"edxapp\"} 0",
            "csmh_proxy_config_reloads_total{result=\"applied\"} 2",
            "csmh_proxy_config_reloads_total{result=\"rejected\"} 1",
            "csmh_proxy_config_generation 3",
            "csmh_proxy_backend_dns_lookups_total{result=\"resolved\"} 0",
            "csmh_proxy_backend_dns_lookups_total{result=\"stale\"} 0",
            "csmh_proxy_backend_dns_lookups_total{result=\"failed\"} 0",
            "csmh_proxy_backend_tls_handshakes_total{backend=\"edxapp\",kind=\"full\"} 0",
            "csmh_proxy_backend_tls_handshakes_total{backend=\"csmh\",kind=\"resumed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in\n{text}");
        }
        assert!(text.contains("# TYPE csmh_proxy_statement_duration_seconds histogram"), "{text}");
    }

    #[test]
    fn a_statement_moves_its_routes_counter_and_histogram() {
        let metrics = Metrics::new();
        metrics.statement(RouteLabel::Rewrite, Duration::from_millis(2));
        metrics.statement(RouteLabel::Rewrite, Duration::from_millis(20));
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        metrics.backend_connect_error(Server::Csmh);
        metrics.backend_connection(Server::Csmh, Some(TlsHandshake::Resumed));
        assert_eq!(metrics.statements(RouteLabel::Rewrite), 2);
        assert_eq!(metrics.statements(RouteLabel::FanOut), 0);
        assert_eq!((metrics.connections_total(), metrics.connections_open()), (2, 1));
        let text = rendered(&metrics);
        for line in [
            "csmh_proxy_statements_total{route=\"rewrite\",prefilter=\"hit\"} 2",
            "csmh_proxy_statement_duration_seconds_count{route=\"rewrite\",prefilter=\"hit\"} 2",
            "csmh_proxy_statement_duration_seconds_bucket{route=\"rewrite\",prefilter=\"hit\",le=\"0.0025\"} 1",
            "csmh_proxy_statement_duration_seconds_bucket{route=\"rewrite\",prefilter=\"hit\",le=\"0.01\"} 1",
            "csmh_proxy_statement_duration_seconds_bucket{route=\"rewrite\",prefilter=\"hit\",le=\"0.025\"} 2",
            "csmh_proxy_statement_duration_seconds_bucket{route=\"rewrite\",prefilter=\"hit\",le=\"+Inf\"} 2",
            "csmh_proxy_statement_duration_seconds_sum{route=\"rewrite\",prefilter=\"hit\"} 0.022",
            "csmh_proxy_connections_total 2",
            "csmh_proxy_connections_open 1",
            "csmh_proxy_backend_connect_errors_total{backend=\"csmh\"} 1",
            "csmh_proxy_backend_tls_handshakes_total{backend=\"csmh\",kind=\"resumed\"} 1",
            "csmh_proxy_backend_tls_handshakes_total{backend=\"csmh\",kind=\"full\"} 0",
            "csmh_proxy_connections_by_transport_total{leg=\"csmh\",transport=\"tls\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in\n{text}");
        }
    }

    #[test]
    fn the_configurations_state_never_goes_back() {
        let metrics = Metrics::new();
        let newer = ConfigState { generation: 5, reloads_applied: 4, reloads_rejected: 0 };
        let _ = metrics.render(newer);
        let text = rendered(&metrics);
        assert!(text.lines().any(|l| l == "csmh_proxy_config_generation 5"), "{text}");
        assert!(text.lines().any(|l| l == "csmh_proxy_config_reloads_total{result=\"applied\"} 4"), "{text}");
        assert!(text.lines().any(|l| l == "csmh_proxy_config_reloads_total{result=\"rejected\"} 1"), "{text}");
    }
}
