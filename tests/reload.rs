//! Live configuration against real servers: flag flips written to `proxy.toml` reach connections that are already
//! open, under load and with transactions in flight as docs/routing.md ("Transactions and flag changes") says; bad
//! files are refused with the running flags kept; an editor's rename-on-save, a ConfigMap-style symlink swap, the
//! poll alone and SIGHUP (sent to the built binary) all reload; backend addresses apply to new connections, a
//! listen address waits for a restart.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use csmh_proxy::config::{Config, check_file};
use csmh_proxy::history::{Flags, Stage};
use csmh_proxy::reload::{POLL_INTERVAL, Watch};
use csmh_proxy::sandbox::ProxyToml;
use csmh_proxy::server::{Proxy, ProxyHandle};
use csmh_proxy::state::ProxyState;
use mysql_async::Conn;
use mysql_async::prelude::*;
use support::EdxDatabases;
use support::edx::*;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The generous bound on anything that should happen within a second.
const PATIENCE: Duration = Duration::from_secs(10);

/// The history table a row is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Old,
    Extended,
}

/// Where an INSERT goes under `flags` (docs/routing.md, "From flags to a route").
fn insert_target(flags: Flags) -> Table {
    if flags.enable_csmh_extended { Table::Extended } else { Table::Old }
}

/// Runs edxapp's history INSERT on `conn` and tells which table took the row, by its id: the extended table's
/// ids start at `first_extended_id`, above every id of the old table.
async fn insert(conn: &mut Conn, first_extended_id: u64, state: &str) -> Table {
    conn.query_drop(edxapp_insert(1, state)).await.unwrap_or_else(|e| panic!("edxapp's INSERT failed: {e}"));
    let id = conn.last_insert_id().expect("an INSERT has an id");
    if id >= first_extended_id { Table::Extended } else { Table::Old }
}

/// A test site whose proxy follows a `proxy.toml` in a temporary directory.
struct LiveSite {
    site: Site,
    /// The directory the configuration lives in; removed when the test ends.
    dir: TempDir,
    /// The file the proxy was started with.
    path: PathBuf,
}

impl LiveSite {
    /// The edX databases with sample history on the shared server, and a proxy with `flags` following
    /// `proxy.toml` as `watch` says.
    async fn new(flags: Flags, watch: fn(PathBuf) -> Watch) -> LiveSite {
        LiveSite::laid_out(flags, watch, |dir, text| {
            let path = dir.join("proxy.toml");
            write(&path, text);
            path
        })
        .await
    }

    /// Like [`LiveSite::new`], the initial file put in place by `lay_out` (given the directory and the text),
    /// which returns the path the proxy is started with.
    async fn laid_out(flags: Flags, watch: fn(PathBuf) -> Watch, lay_out: fn(&Path, &str) -> PathBuf) -> LiveSite {
        let dbs = EdxDatabases::fresh().await;
        let first_extended_id = dbs.create_edx_schema(true).await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = lay_out(dir.path(), &dbs.proxy_toml(flags).render());
        let proxy = start_watching(&path, watch(path.clone())).await;
        LiveSite { site: Site { dbs, proxy, first_extended_id }, dir, path }
    }

    /// The file's text for `flags`.
    fn text(&self, flags: Flags) -> String {
        self.site.dbs.proxy_toml(flags).render()
    }

    /// Writes the file in place with `flags`.
    fn write(&self, flags: Flags) {
        write(&self.path, &self.text(flags));
    }

    /// Replaces the file with one for `flags` in one step, as an editor's rename-on-save does: the proxy can
    /// never read it half-written, however long the writer is descheduled between truncating and writing.
    fn replace(&self, flags: Flags) {
        let saved = self.dir.path().join(".proxy.toml.swp");
        write(&saved, &self.text(flags));
        std::fs::rename(&saved, &self.path).expect("rename over proxy.toml");
    }

    fn shared(&self) -> &ProxyState {
        self.site.proxy.shared()
    }

    /// edxapp's connection through the proxy.
    async fn edxapp(&self) -> Conn {
        self.site.edxapp().await
    }

    /// Runs edxapp's INSERT on `conn` and tells which table took the row.
    async fn insert(&self, conn: &mut Conn) -> Table {
        insert(conn, self.site.first_extended_id, "{}").await
    }

    /// Waits until `done` holds of the proxy's shared state, failing after [`PATIENCE`].
    async fn wait_until(&self, what: &str, done: impl Fn(&ProxyState) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self.shared()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not after {PATIENCE:?} (generation {}, {} applied, {} rejected)",
                self.shared().generation(),
                self.shared().reloads_applied(),
                self.shared().reloads_rejected()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The flags of the configuration in force.
    fn flags(&self) -> Flags {
        self.shared().snapshot().config.flags
    }
}

/// Writes `text` to `path`, as `echo ... > proxy.toml` does (truncated, then written).
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Binds a proxy with the configuration at `path` and runs it on this test's runtime, following the file.
async fn start_watching(path: &Path, watch: Watch) -> ProxyHandle {
    let config = Config::load(path).unwrap_or_else(|e| panic!("the test's proxy.toml: {e}"));
    let proxy = Proxy::bind(config).await.unwrap_or_else(|e| panic!("the proxy cannot bind: {e}"));
    proxy.watch_config(watch).spawn()
}

/// Events only, no poll: what is seen is seen through the directory's events.
fn events_only(path: PathBuf) -> Watch {
    Watch { poll: None, ..Watch::file(path) }
}

/// The poll only, as when events cannot be had.
fn poll_only(path: PathBuf) -> Watch {
    Watch { events: false, poll: Some(POLL_INTERVAL), ..Watch::file(path) }
}

#[tokio::test]
async fn a_flag_flip_reaches_an_already_open_connection() {
    let live = LiveSite::new(Stage::OldTableOnly.flags(), Watch::file).await;
    let mut edxapp = live.edxapp().await;
    assert_eq!(live.insert(&mut edxapp).await, Table::Old);

    live.write(Stage::ExtendedTableReadingBoth.flags());
    let deadline = Instant::now() + PATIENCE;
    while live.insert(&mut edxapp).await == Table::Old {
        assert!(Instant::now() < deadline, "the open connection still writes the old table after {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live.flags(), Stage::ExtendedTableReadingBoth.flags());
    let shared = live.shared();
    assert_eq!((shared.generation(), shared.reloads_applied(), shared.reloads_rejected()), (2, 1, 0));
}

#[tokio::test]
async fn a_malformed_file_and_an_unknown_key_are_refused_and_a_corrected_file_is_then_picked_up() {
    let live = LiveSite::new(Stage::OldTableOnly.flags(), Watch::file).await;
    let mut edxapp = live.edxapp().await;
    let good = live.text(Stage::ExtendedTableReadingBoth.flags());
    // No stage: the old table retired while new history is still written to it.
    let retired_while_written = Flags {
        enable_csmh_extended: false,
        enable_reading_from_multiple_history_tables: false,
        read_only_from_csmhe: true,
    };
    // A file that is not TOML has a line and a column but no key; the others name the key too, and its line
    // where the file has one.
    let refused = [
        ("malformed", good.replacen("[flags]", "[flags", 1), false, true),
        ("unknown key", good.replace("READ_ONLY_FROM_CSMHE", "READ_ONLY_FROM_CSMH"), true, true),
        ("mistyped", good.replace("ENABLE_CSMH_EXTENDED = true", "ENABLE_CSMH_EXTENDED = \"yes\""), true, true),
        ("refused combination", live.text(retired_while_written), true, true),
        // Read while it is being written in place: flags left out must not be taken for off.
        ("cut before its flags", good[..good.find("[flags]").unwrap()].to_owned(), true, false),
        ("cut among its flags", good[..good.find("ENABLE_READING").unwrap()].to_owned(), true, true),
    ];
    for (n, (what, text, names_key, names_line)) in (1..).zip(refused) {
        write(&live.path, &text);
        let error = check_file(&live.path).expect_err(what).to_string();
        assert_eq!(error.contains("line "), names_line, "the {what} file's error and its line: {error}");
        assert_eq!(error.contains("key `"), names_key, "the {what} file's error and its key: {error}");
        live.wait_until(&format!("the {what} file is refused"), |shared| shared.reloads_rejected() == n).await;
        assert_eq!(live.flags(), Stage::OldTableOnly.flags(), "the {what} file changed nothing");
        assert_eq!(live.shared().generation(), 1);
        assert_eq!(live.insert(&mut edxapp).await, Table::Old, "the old flags still route after the {what} file");
    }

    write(&live.path, &good);
    live.wait_until("the corrected file is applied", |shared| shared.generation() == 2).await;
    assert_eq!(live.flags(), Stage::ExtendedTableReadingBoth.flags());
    assert_eq!(live.insert(&mut edxapp).await, Table::Extended);
    let shared = live.shared();
    assert_eq!((shared.reloads_applied(), shared.reloads_rejected()), (1, 6));
}

#[tokio::test]
async fn an_editors_rename_on_save_is_seen_by_the_directory_watch() {
    let live = LiveSite::new(Stage::OldTableOnly.flags(), events_only).await;
    let mut edxapp = live.edxapp().await;
    live.replace(Stage::ExtendedTableReadingBoth.flags());
    live.wait_until("the renamed file is applied", |shared| shared.generation() == 2).await;
    assert_eq!(live.insert(&mut edxapp).await, Table::Extended);
}

/// Kubernetes' layout of a ConfigMap volume: the file is a symlink through `..data`, itself a symlink to a
/// timestamped directory.
fn configmap_volume(dir: &Path, text: &str) -> PathBuf {
    let version = dir.join("..2024_01_01_00_00_00.1");
    std::fs::create_dir(&version).expect("create the first version");
    write(&version.join("proxy.toml"), text);
    std::os::unix::fs::symlink("..2024_01_01_00_00_00.1", dir.join("..data")).expect("link ..data");
    let path = dir.join("proxy.toml");
    std::os::unix::fs::symlink("..data/proxy.toml", &path).expect("link proxy.toml");
    path
}

#[tokio::test]
async fn a_configmap_update_swapping_the_data_symlink_is_seen_by_the_directory_watch() {
    let live = LiveSite::laid_out(Stage::OldTableOnly.flags(), events_only, configmap_volume).await;
    let mut edxapp = live.edxapp().await;
    // What the kubelet does: a new version's directory, a new `..data` link renamed over the old one, the old
    // version removed. `proxy.toml` itself is never written.
    let dir = live.dir.path();
    let version = dir.join("..2024_01_01_00_01_00.2");
    std::fs::create_dir(&version).expect("create the second version");
    write(&version.join("proxy.toml"), &live.text(Stage::ExtendedTableReadingBoth.flags()));
    std::os::unix::fs::symlink("..2024_01_01_00_01_00.2", dir.join("..data_tmp")).expect("link ..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(dir.join("..2024_01_01_00_00_00.1")).expect("remove the first version");

    live.wait_until("the new ConfigMap version is applied", |shared| shared.generation() == 2).await;
    assert_eq!(live.insert(&mut edxapp).await, Table::Extended);
}

#[tokio::test]
async fn without_directory_events_the_poll_sees_the_change() {
    let live = LiveSite::new(Stage::OldTableOnly.flags(), poll_only).await;
    let mut edxapp = live.edxapp().await;
    live.write(Stage::ExtendedTableReadingBoth.flags());
    live.wait_until("the poll sees the new file", |shared| shared.generation() == 2).await;
    assert_eq!(live.insert(&mut edxapp).await, Table::Extended);
}

#[tokio::test]
async fn a_transaction_spanning_a_flip_finishes_under_the_flags_it_began_with() {
    let live = LiveSite::new(Stage::OldTableOnly.flags(), Watch::file).await;
    let mut edxapp = live.edxapp().await;
    edxapp.query_drop("BEGIN").await.unwrap();
    assert_eq!(live.insert(&mut edxapp).await, Table::Old);

    live.write(Stage::ExtendedTableReadingBoth.flags());
    live.wait_until("the flip is applied", |shared| shared.generation() == 2).await;
    let mut other = live.edxapp().await;
    assert_eq!(live.insert(&mut other).await, Table::Extended, "another connection has the new flags");
    assert_eq!(live.insert(&mut edxapp).await, Table::Old, "the transaction keeps the flags it began with");
    edxapp.query_drop("COMMIT").await.unwrap();

    assert_eq!(live.insert(&mut edxapp).await, Table::Extended, "after COMMIT the connection has the new flags");
    assert_eq!(live.site.old_ids().await.len(), 18 + 2, "both rows of the transaction were committed");
}

/// One statement of the load: the row's state and the generations in force just before and just after it.
struct Written {
    state: String,
    before: u64,
    after: u64,
}

/// edxapp's write and read in a loop on its own connection until `stop`, noting each write.
async fn edxapp_load(live: Arc<LiveSite>, worker: usize, stop: Arc<AtomicBool>) -> Result<Vec<Written>, String> {
    let mut conn = Conn::new(live.site.dbs.proxy_opts(&live.site.proxy, &support::app()))
        .await
        .map_err(|e| format!("worker {worker} cannot log in: {e}"))?;
    let mut written = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let state = format!("load {worker} {n}");
        let before = live.shared().generation();
        conn.query_drop(edxapp_insert(1 + worker as u64, &state))
            .await
            .map_err(|e| format!("worker {worker}: INSERT under generation {before}: {e}"))?;
        let after = live.shared().generation();
        written.push(Written { state, before, after });
        let _: Vec<mysql_async::Row> = conn
            .query(edxapp_read(&(1 + worker).to_string()))
            .await
            .map_err(|e| format!("worker {worker}: SELECT after generation {after}: {e}"))?;
    }
    conn.disconnect().await.map_err(|e| format!("worker {worker} cannot disconnect: {e}"))?;
    Ok(written)
}

/// The states of the load's rows in `table` of `live`, looked at directly.
async fn load_states(live: &LiveSite, table: Table) -> Vec<String> {
    let (mut conn, name) = match table {
        Table::Old => (live.site.root().await, live.site.old()),
        Table::Extended => (live.site.csmh_root().await, live.site.extended()),
    };
    conn.query(format!("SELECT state FROM {name} WHERE state LIKE 'load %'")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_flips_under_load_fail_no_statement_and_put_every_row_where_the_flags_said() {
    const FLIPS: u64 = 20;
    let rows = [
        Stage::OldTableOnly.flags(),
        Stage::ExtendedTableReadingBoth.flags(),
        Stage::ExtendedTableOnlyReads.flags(),
        Stage::OldTableRetired.flags(),
        Stage::ExtendedTableOnlyReads.flags(),
        Stage::ExtendedTableReadingBoth.flags(),
    ];
    let live = Arc::new(LiveSite::new(Stage::OldTableOnly.flags(), Watch::file).await);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> =
        (0..4).map(|worker| tokio::spawn(edxapp_load(Arc::clone(&live), worker, Arc::clone(&stop)))).collect();

    let mut flags_of = HashMap::from([(1, Stage::OldTableOnly.flags())]);
    for flip in 1..=FLIPS {
        let flags = rows[(flip as usize) % rows.len()];
        live.replace(flags);
        live.wait_until(&format!("flip {flip} is applied"), |shared| shared.generation() == flip + 1).await;
        flags_of.insert(flip + 1, flags);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for worker in workers {
        written.extend(worker.await.expect("the worker ran").unwrap_or_else(|e| panic!("a client error: {e}")));
    }

    let mut found: HashMap<String, Vec<Table>> = HashMap::new();
    for table in [Table::Old, Table::Extended] {
        for state in load_states(&live, table).await {
            found.entry(state).or_default().push(table);
        }
    }
    let mut by_generation = 0;
    for row in &written {
        let tables = found.get(&row.state).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(tables.len(), 1, "{} is in exactly one table: {tables:?}", row.state);
        if row.before == row.after {
            by_generation += 1;
            let expected = insert_target(flags_of[&row.before]);
            assert_eq!(tables[0], expected, "{} was written under generation {}", row.state, row.before);
        }
    }
    assert_eq!(found.len(), written.len(), "no row the clients did not write");
    assert!(by_generation > 0, "some rows were written between flips");
    let shared = live.shared();
    assert_eq!((shared.reloads_applied(), shared.reloads_rejected()), (FLIPS, 0));
}

/// The port of the server `conn` is logged in to.
async fn port_of(conn: &mut Conn) -> Option<u16> {
    conn.query_first("SELECT @@port").await.unwrap_or_else(|e| panic!("SELECT @@port: {e}"))
}

#[tokio::test]
async fn a_new_backend_address_applies_to_new_connections_and_a_new_listen_address_waits_for_a_restart() {
    let live = LiveSite::new(Stage::OldTableOnly.flags(), Watch::file).await;
    let second = support::second_server().await;
    let mut before = Conn::new(support::app().opts(live.site.proxy.addr(), None)).await.unwrap();
    assert_eq!(port_of(&mut before).await, Some(live.site.dbs.edxapp.addr().port()));

    let moved = ProxyToml {
        edxapp: second.addr(),
        csmh: second.addr(),
        listen: "127.0.0.1:1".parse().expect("an address"),
        ..live.site.dbs.proxy_toml(Stage::OldTableOnly.flags())
    };
    write(&live.path, &moved.render());
    live.wait_until("the new backend address is applied", |shared| shared.generation() == 2).await;
    let snapshot = live.shared().snapshot();
    assert_eq!(snapshot.config.backends.edxapp.address, second.addr().to_string());
    assert_eq!(snapshot.config.listen.address, "127.0.0.1:0", "the snapshot keeps the address in use");

    let mut after = Conn::new(support::app().opts(live.site.proxy.addr(), None)).await.unwrap();
    assert_eq!(port_of(&mut after).await, Some(second.addr().port()), "a new connection goes to the new server");
    assert_eq!(
        port_of(&mut before).await,
        Some(live.site.dbs.edxapp.addr().port()),
        "an open connection stays on its server"
    );
}

/// The standard error of a proxy run as its own process, line by line.
struct Log {
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Log {
    fn new(stderr: tokio::process::ChildStderr) -> Log {
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Log { lines, seen: Vec::new() }
    }

    /// The next line containing `needle`, failing after [`PATIENCE`] with what the proxy logged.
    async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!("the proxy exited before logging {needle:?}:\n{}", self.seen.join("\n")),
                Err(_) => panic!("no line with {needle:?} after {PATIENCE:?}:\n{}", self.seen.join("\n")),
            }
        }
    }
}

/// Sends `signal` to the child process.
fn send(child: &tokio::process::Child, signal: libc::c_int) {
    let pid = child.id().expect("the proxy is running") as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's, not yet waited for.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

#[tokio::test]
async fn sighup_reloads_the_running_binary_and_a_refused_file_is_logged_with_its_line_and_key_never_a_password() {
    let dbs = EdxDatabases::fresh().await;
    let first_extended_id = dbs.create_edx_schema(true).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("proxy.toml");
    write(&path, &dbs.proxy_toml(Stage::OldTableOnly.flags()).render());
    let mut child = support::serve_binary(&["--no-watch"], &path);
    let mut log = Log::new(child.stderr.take().expect("piped stderr"));
    let listening = log.wait_for("listening").await;
    let address = listening.split("address=").nth(1).and_then(|rest| rest.split_whitespace().next());
    let address = address.and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no address in {listening:?}"));
    log.wait_for("reloading").await;

    let mut edxapp = Conn::new(support::app().opts(address, Some(&dbs.edxapp_db))).await.unwrap();
    assert_eq!(insert(&mut edxapp, first_extended_id, "{}").await, Table::Old);
    write(&path, &dbs.proxy_toml(Stage::ExtendedTableReadingBoth.flags()).render());
    assert_eq!(insert(&mut edxapp, first_extended_id, "{}").await, Table::Old, "with --no-watch only SIGHUP reloads");
    send(&child, libc::SIGHUP);
    let reloaded = log.wait_for("reloaded").await;
    assert!(reloaded.contains("on SIGHUP: ENABLE_CSMH_EXTENDED: false -> true"), "{reloaded}");
    assert!(reloaded.contains("generation=2"), "{reloaded}");
    assert_eq!(insert(&mut edxapp, first_extended_id, "{}").await, Table::Extended);

    let unknown = dbs
        .proxy_toml(Stage::ExtendedTableReadingBoth.flags())
        .render()
        .replace("READ_ONLY_FROM_CSMHE", "READ_ONLY_FROM_CSMH");
    write(&path, &unknown);
    send(&child, libc::SIGHUP);
    let refused = log.wait_for("refused").await;
    let error = check_file(&path).expect_err("the unknown key is refused").to_string();
    assert!(refused.contains(&error), "the log line says what check-config says: {error}\n{refused}");
    assert!(refused.contains("key `flags.READ_ONLY_FROM_CSMH`"), "{refused}");
    assert_eq!(insert(&mut edxapp, first_extended_id, "{}").await, Table::Extended, "the running flags stay");

    let secret = "s3cret-Pa55word";
    let unterminated =
        format!("{}\n[admin]\npassword = \"{secret}\n", dbs.proxy_toml(Stage::OldTableOnly.flags()).render());
    write(&path, &unterminated);
    send(&child, libc::SIGHUP);
    let refused = log.wait_for("refused").await;
    let line = unterminated.lines().count();
    assert!(refused.contains(&format!("line {line}")), "the line is named: {refused}");
    assert!(!refused.contains(secret), "the password is logged: {refused}");
    assert_eq!(insert(&mut edxapp, first_extended_id, "{}").await, Table::Extended, "the running flags stay");

    edxapp.disconnect().await.unwrap();
    send(&child, libc::SIGTERM);
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("the proxy stops").expect("wait");
    assert!(status.success(), "the proxy exits cleanly after SIGHUPs: {status}");
}
