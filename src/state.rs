//! The proxy's state that every session shares ([`ProxyState`]): the [`ConfigSnapshot`] in force, the counters,
//! and the reload bookkeeping (the configuration's generation, reloads applied and rejected).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::admission::Admission;
use crate::auth_key::AuthKey;
use crate::config::Config;
use crate::csmh_pool::CsmhPool;
use crate::early_settings::LearnedAnswers;
use crate::grant_cache::GrantCache;
use crate::history::routing_table;
use crate::metrics::Metrics;
use crate::preconnect::Preconnect;
use crate::resolver::Resolver;
use crate::routing::Router;
use crate::shadow::{Shadow, ShadowPlan};
use crate::tls::{Tls, files_fingerprint};
use crate::topology::Topology;

/// A configuration with the state derived from it, swapped as a whole so a statement sees one or the other.
#[derive(Debug)]
pub struct ConfigSnapshot {
    /// The configuration as read.
    pub config: Config,
    /// The routing decisions: the pre-filter, then a route for the statements that pass it.
    pub router: Router,
    /// Set once a session has checked, under this configuration, that the extended table's next id is above
    /// every id of the old table (docs/routing.md, "Offset safety").
    pub offset_verified: std::sync::OnceLock<()>,
    /// Which configuration this is: 1 for the one the proxy started with, one more for each applied reload.
    pub generation: u64,
    /// TLS on both legs, built from the certificate files the configuration names when it was compiled.
    pub tls: Tls,
    /// The fingerprint of those files as they were read ([`crate::tls::files_fingerprint`]).
    pub tls_files: u64,
    /// How merged reads are compared with the extended table alone (`[shadow]`); `None` when off.
    pub shadow: Option<ShadowPlan>,
}

/// A configuration that passed validation but from which the data path cannot be derived.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the configuration: {0}")]
pub struct CompileError(String);

impl ConfigSnapshot {
    /// Derives what the data path needs from a validated `config`, as generation 1.
    pub fn compile(config: Config) -> Result<ConfigSnapshot, CompileError> {
        let error = |e: &dyn std::fmt::Display| CompileError(e.to_string());
        let old = config.history.old().map_err(|e| error(&e))?;
        let extended = config.history.extended().map_err(|e| error(&e))?;
        let table = routing_table(config.flags).map_err(|e| error(&e))?;
        let router = Router::new(table, old, extended, Topology::of(&config.backends))
            .with_parse_limit(config.listen.max_parsed_statement_bytes);
        let tls_files = files_fingerprint(&config);
        let tls = Tls::load(&config).map_err(|e| error(&e))?;
        let shadow = ShadowPlan::new(config.shadow.sample, &router);
        Ok(ConfigSnapshot {
            router,
            config,
            offset_verified: Default::default(),
            generation: 1,
            tls,
            tls_files,
            shadow,
        })
    }
}

/// State shared by the listener and every session (no process globals: tests run proxies side by side).
#[derive(Debug)]
pub struct ProxyState {
    current: ArcSwap<ConfigSnapshot>,
    /// Held while a new snapshot is compiled and stored, so generations follow each other without gaps.
    writer: Mutex<()>,
    reloads_applied: AtomicU64,
    reloads_rejected: AtomicU64,
    /// The proxy's counters.
    pub metrics: Metrics,
    /// The grants checks remembered across sessions.
    pub grants: GrantCache,
    /// The clients connected and logging in, against `[listen]`'s limits.
    pub admission: Admission,
    /// The RSA key for caching_sha2_password's full authentication of plaintext clients, made on first use.
    auth_key: tokio::sync::OnceCell<Option<AuthKey>>,
    /// Set once the proxy began to shut down: it is no longer ready for new clients.
    draining: AtomicBool,
    /// The shadow comparison of merged reads.
    pub shadow: Shadow,
    /// The connections to `edxapp` opened ahead of clients.
    pub preconnect: Preconnect,
    /// The connections to a separate `csmh` server kept between sessions.
    pub csmh_pool: Arc<CsmhPool>,
    /// The backends' host names, as last looked up (shared with the shadow comparison's worker).
    pub resolver: Arc<Resolver>,
    /// The servers' answers to the session settings answered early.
    pub early_answers: LearnedAnswers,
}

impl ProxyState {
    /// The state of a proxy starting with `config`, as generation 1.
    pub fn new(config: Config) -> Result<ProxyState, CompileError> {
        let metrics = Metrics::default();
        let resolver = Arc::new(Resolver::new(metrics.resolver().clone()));
        Ok(ProxyState {
            current: ArcSwap::from_pointee(ConfigSnapshot::compile(config)?),
            writer: Mutex::new(()),
            reloads_applied: AtomicU64::new(0),
            reloads_rejected: AtomicU64::new(0),
            shadow: Shadow::new(metrics.shadow().clone(), Arc::clone(&resolver)),
            resolver,
            preconnect: Preconnect::new(metrics.preconnect().clone()),
            csmh_pool: Arc::new(CsmhPool::new(metrics.kept().clone())),
            metrics,
            grants: GrantCache::default(),
            admission: Admission::default(),
            auth_key: tokio::sync::OnceCell::new(),
            draining: AtomicBool::new(false),
            early_answers: LearnedAnswers::default(),
        })
    }

    /// Marks the proxy as shutting down: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the proxy is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The proxy's RSA key for caching_sha2_password's full authentication, generated the first time a session
    /// needs it; `None` if it could not be generated.
    pub async fn auth_key(&self) -> Option<&AuthKey> {
        let generate = || async {
            let generated = tokio::task::spawn_blocking(AuthKey::generate).await;
            generated.ok().and_then(Result::ok)
        };
        self.auth_key.get_or_init(generate).await.as_ref()
    }

    /// The snapshot in force now; a session holds it for one statement, or for a whole transaction.
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.current.load_full()
    }

    /// Puts `config` in force for statements that start from now on, as the next generation, and counts an
    /// applied reload. Returns the snapshot now in force; on an error nothing changes.
    pub fn replace(&self, config: Config) -> Result<Arc<ConfigSnapshot>, CompileError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = ConfigSnapshot::compile(config)?;
        next.generation = self.current.load().generation + 1;
        let next = Arc::new(next);
        self.current.store(Arc::clone(&next));
        self.reloads_applied.fetch_add(1, Ordering::Relaxed);
        Ok(next)
    }

    /// Counts a reload that was refused (the running configuration stayed).
    pub fn record_rejected_reload(&self) {
        self.reloads_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// `listen.max_packet_bytes` in force: the largest client packet a session reads next.
    pub fn max_packet_bytes(&self) -> usize {
        self.current.load().config.listen.max_packet_bytes
    }

    /// The generation of the configuration in force: 1 at start, one more for each applied reload. It is the
    /// snapshot's own number, so it always matches the flags a statement starting now is routed by.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Reloads that put a new configuration in force.
    pub fn reloads_applied(&self) -> u64 {
        self.reloads_applied.load(Ordering::Relaxed)
    }

    /// Reloads refused because the file could not be read, parsed, validated or compiled.
    pub fn reloads_rejected(&self) -> u64 {
        self.reloads_rejected.load(Ordering::Relaxed)
    }
}
