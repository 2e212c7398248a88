//! Live configuration: a running proxy follows its `proxy.toml` and puts each valid new version in force.
//!
//! A [`Watcher`] reloads the file when it changes and on SIGHUP. Changes are seen two ways, both comparing a hash
//! of the file's content with the last one read, so a write that changes nothing (a `touch`, a save without edits)
//! does nothing:
//! - **events** on the file's *directory* (the `notify` crate: inotify on Linux). Watching the directory rather
//!   than the file sees an editor's rename-on-save and a Kubernetes ConfigMap update (a `..data` symlink swapped
//!   by a rename), both of which replace the file instead of writing it. Only events naming the file, its
//!   symlink's first step or the file the links reach count ([`EntryNames`]), so other files written in the
//!   same directory cost nothing. Events come in bursts, so the file is read once the directory has been quiet
//!   for [`DEBOUNCE`] (at most [`MAX_DELAY`] after the first event);
//! - a **poll** of the hash every [`POLL_INTERVAL`], always on as a backstop: for file systems without events
//!   (NFS, some container overlays), for a watch that could not start, and for events lost to a queue overflow.
//!
//! A reload reads, parses and validates the file exactly as [`Config::load`] does, compiles a
//! [`ConfigSnapshot`](crate::state::ConfigSnapshot) and swaps it in ([`apply`]); statements that start afterwards use it,
//! and a transaction in flight finishes under the snapshot it began with. Any error leaves the running
//! configuration in place, logs one error line with the message `check-config` prints (the line and key at
//! fault) and is counted in [`ProxyState::reloads_rejected`]; the next version of the file is read as usual. An
//! applied reload logs one info line listing exactly what changed. `listen.address` and `admin.address` cannot
//! move without a restart: a change to them is logged as a warning and the rest of the file is applied.
//!
//! This is runtime machinery (file events, a timer, a signal, the shared snapshot), kept out of [`crate::config`]
//! so that the configuration stays plain values: `reload` depends on `config` and `shared`, neither on it.

use std::ffi::{OsStr, OsString};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, warn};

use crate::config::{Change, Config, ConfigError, changes};
use crate::state::{CompileError, ProxyState};
use crate::tls::files_fingerprint;

/// How long the directory must stay quiet after an event before the file is read: an editor's save or a
/// ConfigMap update is a burst of events, and makes one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The longest a burst of events can put a reload off, however long it goes on.
pub const MAX_DELAY: Duration = Duration::from_millis(500);

/// How often the file's content hash is checked whatever the events say, when polling is on.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The file a proxy follows, and what makes it reload. SIGHUP always does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The configuration file, as given on the command line.
    pub path: PathBuf,
    /// Whether events on the file's directory reload it.
    pub events: bool,
    /// How often the file's content hash is checked, if at all.
    pub poll: Option<Duration>,
}

impl Watch {
    /// Follow `path`: directory events, a poll every [`POLL_INTERVAL`] as a backstop, and SIGHUP.
    pub fn file(path: impl Into<PathBuf>) -> Watch {
        Watch { path: path.into(), events: true, poll: Some(POLL_INTERVAL) }
    }

    /// Reload `path` on SIGHUP only, never because it changed.
    pub fn sighup_only(path: impl Into<PathBuf>) -> Watch {
        Watch { path: path.into(), events: false, poll: None }
    }
}

/// A running watcher. It stops when [`Watcher::stop`] is called or when it is dropped.
#[derive(Debug)]
pub struct Watcher {
    task: JoinHandle<()>,
    stop: DropGuard,
}

impl Watcher {
    /// Starts following `watch.path` for `shared` on the current tokio runtime. SIGHUP is listened for before
    /// this returns, so a SIGHUP sent afterwards reloads rather than ending the process.
    pub fn spawn(watch: Watch, shared: Arc<ProxyState>) -> Watcher {
        let stop = CancellationToken::new();
        let triggers = Triggers::start(&watch);
        let reloader = Reloader { path: watch.path, shared, last: None };
        let task = tokio::spawn(follow(reloader, triggers, stop.clone()));
        Watcher { task, stop: stop.drop_guard() }
    }

    /// Stops watching and waits for a reload in progress to finish.
    pub async fn stop(self) {
        let Watcher { task, stop } = self;
        drop(stop);
        if let Err(error) = task.await {
            warn!(%error, "the configuration watcher ended abnormally");
        }
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, or is not a valid `proxy.toml`.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file is valid but the data path cannot be derived from it.
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// Whether the certificate and key files the running configuration names changed on disk since they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFiles {
    /// As they were: nothing to reread unless the configuration changed.
    Unchanged,
    /// Rewritten (a rotated certificate): the configuration is compiled again, rereading them.
    Changed,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The changes now in force; empty if the file says nothing new.
    pub applied: Vec<Change>,
    /// The certificate and key files were read again (their content changed).
    pub tls_files_reread: bool,
    /// Changes the file asks for that wait for a restart (the listeners' addresses).
    pub need_restart: Vec<Change>,
    /// The generation in force after the reload.
    pub generation: u64,
}

/// Puts `file` in force in `shared`, except the listeners' addresses, which keep the values the proxy started
/// with (so the snapshot tells what is really served). Nothing is swapped if nothing else changed, unless the
/// TLS files did (`tls_files`): then the configuration is compiled again with their new content, for new
/// connections (those running keep the certificates they were made with).
pub fn apply(shared: &ProxyState, file: Config, tls_files: TlsFiles) -> Result<Reloaded, CompileError> {
    let running = shared.snapshot();
    let need_restart: Vec<Change> = changes(&running.config, &file).into_iter().filter(Change::needs_restart).collect();
    let effective = keep_listeners(&running.config, file);
    let applied = changes(&running.config, &effective);
    let tls_files_reread = tls_files == TlsFiles::Changed;
    let generation = if applied.is_empty() && !tls_files_reread {
        running.generation
    } else {
        shared.replace(effective)?.generation
    };
    Ok(Reloaded { applied, tls_files_reread, need_restart, generation })
}

/// `file` with the listeners' addresses of `running`, which a reload cannot move.
fn keep_listeners(running: &Config, file: Config) -> Config {
    let mut effective = file;
    effective.listen.address.clone_from(&running.listen.address);
    effective.admin.clone_from(&running.admin);
    effective
}

/// What made the watcher read the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The watcher started: the file may have changed since the proxy read it.
    Start,
    /// An event or the poll saw the file change.
    Changed,
    /// SIGHUP: read the file even if its content is the same.
    Sighup,
}

/// What was last seen on disk: the configuration file, and the TLS files the running configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    file: FileSeen,
    /// The fingerprint of the TLS files ([`files_fingerprint`]).
    tls_files: u64,
}

/// What was last seen at the file's path, to tell a change from a write of the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileSeen {
    /// The hash of the content.
    Content(u64),
    /// The file could not be read, for this reason.
    Unreadable(io::ErrorKind),
}

/// Reads the file and puts it in force.
struct Reloader {
    path: PathBuf,
    shared: Arc<ProxyState>,
    last: Option<Seen>,
}

impl Reloader {
    /// Whether the file's content, or that of the TLS files, differs from what was last read.
    async fn changed_on_disk(&self) -> bool {
        self.last != Some(self.read().await.0)
    }

    /// Reads the file, and the fingerprint of the TLS files the running configuration names.
    async fn read(&self) -> (Seen, Result<String, ConfigError>) {
        let (file, text) = read(&self.path).await;
        let running = self.shared.snapshot();
        let tls_files = tokio::task::spawn_blocking(move || files_fingerprint(&running.config)).await.unwrap_or(0);
        (Seen { file, tls_files }, text)
    }

    /// Reads the file and, unless it and the TLS files are what was last read (and this is not a SIGHUP), reloads
    /// it and logs how it went.
    async fn reload(&mut self, cause: Cause) {
        let (seen, text) = self.read().await;
        if cause == Cause::Changed && self.last == Some(seen) {
            return;
        }
        // Compared with what the running configuration was compiled from, so that a rotation just before the
        // watcher started is not missed.
        let tls_files =
            if seen.tls_files == self.shared.snapshot().tls_files { TlsFiles::Unchanged } else { TlsFiles::Changed };
        self.last = Some(seen);
        let outcome = text.map_err(ReloadError::from).and_then(|text| {
            let file = Config::parse_file(&text)?;
            Ok(apply(&self.shared, file, tls_files)?)
        });
        match outcome {
            Ok(reloaded) => self.report(cause, &reloaded),
            Err(refused) => {
                self.shared.record_rejected_reload();
                error!("reload of {} refused, the running configuration stays: {refused}", self.path.display());
            }
        }
    }

    /// Logs an applied (or empty) reload: one info line of changes, one warning for those waiting for a restart.
    fn report(&self, cause: Cause, reloaded: &Reloaded) {
        let path = self.path.display();
        let by = if cause == Cause::Sighup { " on SIGHUP" } else { "" };
        if !reloaded.need_restart.is_empty() {
            warn!(
                "{path}: {} cannot take effect without a restart; until then the proxy keeps listening where it \
                 started, and applies the rest of the file",
                list(&reloaded.need_restart)
            );
        }
        if reloaded.tls_files_reread {
            info!(
                generation = reloaded.generation,
                "{path}: the TLS certificate and key files changed and were reloaded"
            );
        }
        match (reloaded.applied.is_empty(), cause) {
            (false, _) => info!(generation = reloaded.generation, "reloaded {path}{by}: {}", list(&reloaded.applied)),
            (true, Cause::Sighup) => info!(generation = reloaded.generation, "{path} reread on SIGHUP: no changes"),
            (true, _) => debug!(generation = reloaded.generation, "{path} read: no changes to apply"),
        }
    }
}

/// Changes on one line, separated by commas.
fn list(changes: &[Change]) -> String {
    changes.iter().map(Change::to_string).collect::<Vec<_>>().join(", ")
}

/// Reads the file at `path` as [`Config::load`] does, with what was seen there.
async fn read(path: &Path) -> (FileSeen, Result<String, ConfigError>) {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => {
            let mut hasher = DefaultHasher::new();
            text.hash(&mut hasher);
            (FileSeen::Content(hasher.finish()), Ok(text))
        }
        Err(source) => {
            let seen = FileSeen::Unreadable(source.kind());
            (seen, Err(ConfigError::Read { path: path.display().to_string(), source }))
        }
    }
}

/// The watcher's loop: reloads on a settled burst of events, a poll that sees the content change, or SIGHUP, until
/// `stop` is cancelled.
async fn follow(mut reloader: Reloader, triggers: Triggers, stop: CancellationToken) {
    let Triggers { mut events, mut poll, mut hangups } = triggers;
    let mut burst = Burst::default();
    reloader.reload(Cause::Start).await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = next_event(&mut events) => burst.event(Instant::now()),
            () = next_tick(&mut poll) => {
                if reloader.changed_on_disk().await {
                    burst.event(Instant::now());
                }
            }
            () = burst.settled() => {
                burst = Burst::default();
                reloader.reload(Cause::Changed).await;
            }
            () = next_hangup(&mut hangups) => reloader.reload(Cause::Sighup).await,
        }
    }
}

/// A burst of changes not yet acted on.
#[derive(Debug, Default)]
struct Burst {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Burst {
    /// Notes a change seen at `now`.
    fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When to act: [`DEBOUNCE`] after the last change, but no later than [`MAX_DELAY`] after the first.
    fn due(&self) -> Option<Instant> {
        Some((self.last? + DEBOUNCE).min(self.first? + MAX_DELAY))
    }

    /// Resolves when the burst is due; never if there is none.
    async fn settled(&self) {
        match self.due() {
            Some(due) => tokio::time::sleep_until(due).await,
            None => std::future::pending().await,
        }
    }
}

/// The sources of reloads: directory events, the poll, SIGHUP; each absent if off or if it could not start.
struct Triggers {
    events: Option<DirectoryEvents>,
    poll: Option<Interval>,
    hangups: Option<Signal>,
}

impl Triggers {
    /// Starts what `watch` asks for, logging what could not start and what the proxy relies on instead.
    fn start(watch: &Watch) -> Triggers {
        let path = watch.path.display();
        let hangups = signal(SignalKind::hangup())
            .inspect_err(|error| warn!(%error, "cannot listen for SIGHUP; {path} is not reloaded on SIGHUP"))
            .ok();
        let events = if watch.events { DirectoryEvents::start(&watch.path) } else { None };
        let poll = watch.poll.map(|every| {
            let mut poll = tokio::time::interval_at(Instant::now() + every, every);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll
        });
        match (&events, &poll) {
            (None, None) => info!("reloading {path} on SIGHUP"),
            (Some(_), _) => info!("reloading {path} when it changes and on SIGHUP"),
            (None, Some(every)) => {
                info!("reloading {path} on SIGHUP and when its content changes (checked every {:?})", every.period())
            }
        }
        Triggers { events, poll, hangups }
    }
}

/// Resolves on the next directory event; never if there are none.
async fn next_event(events: &mut Option<DirectoryEvents>) {
    let Some(directory) = events else { return std::future::pending().await };
    if directory.changes.recv().await.is_none() {
        warn!("directory events for the configuration file stopped; polling goes on if it is on");
        *events = None;
        std::future::pending::<()>().await;
    }
}

/// Resolves on the poll's next tick; never if polling is off.
async fn next_tick(poll: &mut Option<Interval>) {
    match poll {
        Some(poll) => {
            poll.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves on the next SIGHUP; never if SIGHUP cannot be listened for.
async fn next_hangup(hangups: &mut Option<Signal>) {
    let Some(signals) = hangups else { return std::future::pending().await };
    if signals.recv().await.is_none() {
        *hangups = None;
        std::future::pending::<()>().await;
    }
}

/// Events on the directories of the configuration file, as a channel that holds at most one pending wake-up.
struct DirectoryEvents {
    /// Kept alive for its thread; dropping it stops the events.
    watcher: RecommendedWatcher,
    changes: mpsc::Receiver<()>,
}

impl DirectoryEvents {
    /// Watches the file's directory, and the directory of the file a symlink points to if it is elsewhere;
    /// `None` (with a warning saying the poll is what is left) if the watch cannot start.
    fn start(path: &Path) -> Option<DirectoryEvents> {
        let directory = directory_of(path);
        match DirectoryEvents::watch(path, &directory) {
            Ok(mut events) => {
                events.also_watch_symlink_target(path, &directory);
                Some(events)
            }
            Err(error) => {
                warn!(
                    "cannot watch {} for changes ({error}); changes to {} are seen by polling only",
                    directory.display(),
                    path.display()
                );
                None
            }
        }
    }

    fn watch(path: &Path, directory: &Path) -> notify::Result<DirectoryEvents> {
        let (sender, changes) = mpsc::channel(1);
        let names = EntryNames::of(path);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Filtered here, on the watcher's own thread: an event on another file of the directory (a log
            // written next to the configuration, say) does not wake the runtime.
            if event.as_ref().map_or(true, |event| may_change_content(&event.kind) && names.concern(event)) {
                // A full channel already holds a wake-up, which is all a burst needs.
                let _ = sender.try_send(());
            }
        })?;
        watcher.watch(directory, RecursiveMode::NonRecursive)?;
        Ok(DirectoryEvents { watcher, changes })
    }

    /// When `path` is a symlink to a file in another directory, watches that directory too (best effort: the
    /// poll covers it otherwise).
    fn also_watch_symlink_target(&mut self, path: &Path, directory: &Path) {
        let Ok(target) = std::fs::canonicalize(path) else { return };
        let target_directory = directory_of(&target);
        let same = std::fs::canonicalize(directory).is_ok_and(|directory| directory == target_directory);
        if same {
            return;
        }
        if let Err(error) = self.watcher.watch(&target_directory, RecursiveMode::NonRecursive) {
            debug!(%error, directory = %target_directory.display(), "cannot watch the symlink target's directory");
        }
    }
}

/// The names of the directory entries whose events can mean new content for the configuration file: the file's
/// own name; when it is a symlink, the first step of the link (Kubernetes' `..data`, which a ConfigMap update
/// renames over); and the name of the file the links finally reach, in its own directory.
#[derive(Debug)]
struct EntryNames(Vec<OsString>);

impl EntryNames {
    /// The names for the file at `path`, as it is laid out now. A layout changed later (a symlink pointed at a
    /// file of another name) is still seen, by the poll: events on the new name are not watched for.
    fn of(path: &Path) -> EntryNames {
        let mut names: Vec<OsString> = path.file_name().map(OsStr::to_os_string).into_iter().collect();
        if let Ok(link) = std::fs::read_link(path)
            && let Some(first) = first_step_in(&link, &directory_of(path))
        {
            names.push(first.to_os_string());
        }
        if let Ok(target) = std::fs::canonicalize(path) {
            names.extend(target.file_name().map(OsStr::to_os_string));
        }
        names.sort();
        names.dedup();
        EntryNames(names)
    }

    /// Whether `event` may concern the file: it names one of the entries, or names none at all (the watcher lost
    /// events and asks for a rescan).
    fn concern(&self, event: &notify::Event) -> bool {
        let named = |path: &PathBuf| path.file_name().is_some_and(|name| self.0.iter().any(|entry| entry == name));
        event.paths.is_empty() || event.paths.iter().any(named)
    }
}

/// The entry of `directory` a symlink's target `link` goes through first: `..data` for `..data/proxy.toml` or
/// `./..data/proxy.toml`, and for an absolute target inside `directory` as written; `None` for a target elsewhere.
fn first_step_in<'a>(link: &'a Path, directory: &Path) -> Option<&'a OsStr> {
    let relative = if link.is_absolute() { link.strip_prefix(directory).ok()? } else { link };
    match relative.components().find(|step| *step != Component::CurDir)? {
        Component::Normal(name) => Some(name),
        _ => None,
    }
}

/// The directory a file is in (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether an event can mean new content: anything but opening, reading and closing without writing (which the
/// watcher's own reads cause).
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(access) => *access == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = crate::config::tests::MINIMAL;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn shared() -> ProxyState {
        ProxyState::new(config(BASE)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn listed(changes: &[Change]) -> Vec<String> {
        changes.iter().map(Change::to_string).collect()
    }

    #[test]
    fn a_flag_change_is_a_new_generation() {
        let shared = shared();
        let reloaded =
            apply(&shared, config(&format!("{BASE}[flags]\nENABLE_CSMH_EXTENDED = true\n")), TlsFiles::Unchanged)
                .unwrap();
        assert_eq!(listed(&reloaded.applied), ["ENABLE_CSMH_EXTENDED: false -> true"]);
        assert!(reloaded.need_restart.is_empty());
        assert_eq!((reloaded.generation, shared.generation(), shared.reloads_applied()), (2, 2, 1));
        assert!(shared.snapshot().config.flags.enable_csmh_extended);
    }

    #[test]
    fn the_same_settings_change_nothing() {
        let shared = shared();
        let reloaded = apply(&shared, config(&format!("# only a comment\n{BASE}")), TlsFiles::Unchanged).unwrap();
        assert!(reloaded.applied.is_empty() && reloaded.need_restart.is_empty());
        assert_eq!((reloaded.generation, shared.generation(), shared.reloads_applied()), (1, 1, 0));
    }

    #[test]
    fn a_new_listen_address_waits_for_a_restart_and_the_rest_applies() {
        let shared = shared();
        let text = BASE.replace("127.0.0.1:6033\"", "127.0.0.1:7033\"\nshutdown_timeout_secs = 3");
        let reloaded =
            apply(&shared, config(&format!("{text}[admin]\naddress = \"127.0.0.1:6080\"\n")), TlsFiles::Unchanged)
                .unwrap();
        assert_eq!(
            listed(&reloaded.need_restart),
            ["listen.address: 127.0.0.1:6033 -> 127.0.0.1:7033", "admin.address: off -> 127.0.0.1:6080"]
        );
        assert_eq!(listed(&reloaded.applied), ["listen.shutdown_timeout_secs: 10 -> 3"]);
        let snapshot = shared.snapshot();
        assert_eq!(snapshot.config.listen.address, "127.0.0.1:6033", "the snapshot keeps the address in use");
        assert_eq!(snapshot.config.admin, None);
        assert_eq!(snapshot.generation, 2);
    }

    #[test]
    fn only_a_listen_change_swaps_nothing() {
        let shared = shared();
        let reloaded =
            apply(&shared, config(&BASE.replace("127.0.0.1:6033", "127.0.0.1:7033")), TlsFiles::Unchanged).unwrap();
        assert!(reloaded.applied.is_empty());
        assert_eq!(reloaded.need_restart.len(), 1);
        assert_eq!(shared.generation(), 1);
    }

    #[test]
    fn a_burst_is_due_after_a_quiet_spell_but_never_later_than_the_maximum_delay() {
        let start = Instant::now();
        let mut burst = Burst::default();
        assert_eq!(burst.due(), None);
        burst.event(start);
        assert_eq!(burst.due(), Some(start + DEBOUNCE));
        burst.event(start + DEBOUNCE / 2);
        assert_eq!(burst.due(), Some(start + DEBOUNCE / 2 + DEBOUNCE), "each event puts the reload off");
        for step in 1..=20 {
            burst.event(start + DEBOUNCE / 2 * step);
        }
        assert_eq!(burst.due(), Some(start + MAX_DELAY), "a burst that goes on is cut short");
    }

    #[test]
    fn the_watchers_own_reads_are_not_changes() {
        assert!(!may_change_content(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!may_change_content(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(may_change_content(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(may_change_content(&EventKind::Modify(notify::event::ModifyKind::Name(notify::event::RenameMode::To))));
        assert!(may_change_content(&EventKind::Other));
    }

    fn event_on(paths: &[&Path]) -> notify::Event {
        let kind = EventKind::Modify(notify::event::ModifyKind::Data(notify::event::DataChange::Any));
        paths.iter().fold(notify::Event::new(kind), |event, path| event.add_path(path.to_path_buf()))
    }

    #[test]
    fn events_on_other_files_of_the_directory_are_not_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, "").unwrap();
        let names = EntryNames::of(&path);
        assert!(names.concern(&event_on(&[&path])));
        assert!(!names.concern(&event_on(&[&dir.path().join("proxy.log")])));
        assert!(!names.concern(&event_on(&[&dir.path().join("proxy.toml.swp")])));
        // A rename over the file names it as the rename's destination.
        assert!(names.concern(&event_on(&[&dir.path().join("proxy.toml.tmp"), &path])));
        // No path: the watcher lost events and asks for a rescan.
        assert!(names.concern(&event_on(&[])));
    }

    #[test]
    fn a_configmap_files_data_link_and_target_are_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let version = dir.path().join("..2024_01_01_00_00_00.1");
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("real.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2024_01_01_00_00_00.1", dir.path().join("..data")).unwrap();
        let path = dir.path().join("proxy.toml");
        std::os::unix::fs::symlink("..data/real.toml", &path).unwrap();
        let names = EntryNames::of(&path);
        assert!(names.concern(&event_on(&[&dir.path().join("..data_tmp"), &dir.path().join("..data")])));
        assert!(names.concern(&event_on(&[&version.join("real.toml")])));
        assert!(!names.concern(&event_on(&[&dir.path().join("..data_tmp")])));
    }

    #[test]
    fn a_links_first_step_is_found_however_the_link_is_written() {
        let dir = Path::new("/etc/csmh");
        let step = |link: &str| first_step_in(Path::new(link), dir).map(|name| name.to_os_string());
        assert_eq!(step("..data/proxy.toml"), Some("..data".into()));
        assert_eq!(step("./current/proxy.toml"), Some("current".into()));
        assert_eq!(step("/etc/csmh/current/proxy.toml"), Some("current".into()));
        assert_eq!(step("/srv/elsewhere/proxy.toml"), None);
        assert_eq!(step("../proxy.toml"), None);
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("proxy.toml")), PathBuf::from("."));
        assert_eq!(directory_of(Path::new("/etc/csmh-proxy/proxy.toml")), PathBuf::from("/etc/csmh-proxy"));
    }
}
