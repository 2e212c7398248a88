//! `[shadow]` against real MariaDB servers, through the built proxy: while reads come from both tables, edxapp's
//! history reads are also answered from the extended table alone and compared. With every row copied, every read
//! matches; a row planted missing from the extended table makes the next read of it count as differing, logged
//! with its id and never its values, while the client still gets every row.

mod migrate_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use csmh_proxy::history::Stage;
use migrate_support::{MigrationSite, outputs};
use mysql_async::prelude::Queryable;
use support::edx::edxapp_read;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStderr;

/// Old history rows on each site.
const ROWS: u64 = 3_000;

#[tokio::test]
async fn shadow_reads_match_a_complete_copy_and_count_a_planted_difference_across_two_servers() {
    shadow_reads(true).await;
}

#[tokio::test]
async fn shadow_reads_match_a_complete_copy_and_count_a_planted_difference_on_one_server() {
    shadow_reads(false).await;
}

async fn shadow_reads(two_servers: bool) {
    let mut site = MigrationSite::new(two_servers).await;
    site.generate_old_rows(ROWS).await;
    site.set_flags(Stage::ExtendedTableReadingBoth.flags());
    let (module, ids) = a_module_with_history(&site).await;
    for command in [&["init"][..], &["migrate"], &["verify"]] {
        let output = site.command(command).await;
        assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    }

    let config = shadow_config(&site, 1.0);
    let mut proxy = support::serve_binary(&[], &config);
    let mut log = BufReader::new(proxy.stderr.take().expect("its log")).lines();
    let address = support::address_logged(&mut log, "listening").await;
    let admin = support::address_logged(&mut log, "admin listening").await;
    let mut edxapp = support::connect(address, &support::app(), Some(&site.dbs.edxapp_db)).await;

    let read = edxapp_read(&module.to_string());
    let answer: Vec<(u64, Option<String>)> = edxapp
        .query_map(&read, |row: mysql_async::Row| {
            (row.get::<u64, _>(0).expect("an id"), row.get::<Option<String>, _>(3).expect("a state"))
        })
        .await
        .expect("the read through the proxy");
    assert_eq!(answer.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    for _ in 0..4 {
        edxapp.query_drop(&read).await.expect("the read again");
    }
    let counts = wait_for(admin, |counts| counts.compared() >= 5).await;
    assert_eq!((counts.matching, counts.differing, counts.failed), (5, 0, 0), "{counts:?}");

    // A row the copy left out: the client still gets it (from the old table), the extended table alone would not.
    let planted = ids[1];
    let mut csmh = site.csmh().await;
    csmh.query_drop(format!("DELETE FROM {} WHERE id = {planted}", site.extended())).await.expect("plant");
    let again: Vec<u64> =
        edxapp.query_map(&read, |row: mysql_async::Row| row.get::<u64, _>(0).expect("an id")).await.expect("read");
    assert_eq!(again, ids, "the client's answer is unchanged");
    let counts = wait_for(admin, |counts| counts.compared() >= 6).await;
    assert_eq!((counts.matching, counts.differing), (5, 1), "{counts:?}");
    let logged = line_containing(&mut log, "shadow read: the extended table alone would not give").await;
    assert!(logged.contains(&format!("ids {planted})")), "the id is named: {logged}");
    let state = answer[1].1.clone().expect("a state");
    assert!(!logged.contains(&state), "never a value: {logged}");

    // `fleet` and `status` add the counts up; the runbook's next step is to look at the difference first.
    let admin_arg = admin.to_string();
    let fleet = site.command(&["fleet", "--admin", &admin_arg]).await;
    let fleet_text = String::from_utf8_lossy(&fleet.stdout);
    assert!(
        fleet_text.contains("shadow reads: 6 reads compared on 1 proxies since they started: 5 matching, 1 differing"),
        "{}",
        outputs(&fleet)
    );
    assert!(fleet_text.contains("DIFFERENCES"), "{fleet_text}");
    let status = site.command(&["status", "--json", "--admin", &admin_arg]).await;
    assert_eq!(status.status.code(), Some(0), "{}", outputs(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status["shadow"]["compared"], 6, "{status:#}");
    assert_eq!(status["shadow"]["differing"], 1, "{status:#}");
    assert_eq!(status["next_step"]["step"], "investigate_shadow", "{status:#}");

    // Reads of other modules, and statements that are not merged reads, are not counted as differing.
    edxapp.query_drop("SELECT 1").await.expect("a passthrough");
    edxapp.query_drop(edxapp_read(&(module + 1).to_string())).await.expect("another module");
    let counts = wait_for(admin, |counts| counts.compared() >= 7).await;
    assert_eq!(counts.differing, 1, "{counts:?}");

    // Repaired (`migrate --from-id`) and verified: the difference is past, the runbook goes on, and `fleet` and
    // `status` show the reads compared since it, without restarting the proxy.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let from = planted.to_string();
    for command in [&["migrate", "--from-id", &from][..], &["verify"]] {
        let output = site.command(command).await;
        assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    }
    edxapp.query_drop(&read).await.expect("the read once repaired");
    let counts = wait_for(admin, |counts| counts.compared() >= 8).await;
    assert_eq!((counts.matching, counts.differing), (7, 1), "{counts:?}");
    let fleet = site.command(&["fleet", "--admin", &admin_arg]).await;
    let fleet_text = String::from_utf8_lossy(&fleet.stdout);
    assert!(fleet_text.contains(" s ago, 2 reads compared since"), "{}", outputs(&fleet));
    let status = site.command(&["status", "--json", "--admin", &admin_arg]).await;
    assert_eq!(status.status.code(), Some(0), "{}", outputs(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(
        (&status["shadow"]["differing"], &status["shadow"]["compared_since_last_differing"]),
        (&1.into(), &2.into())
    );
    let at = status["shadow"]["last_differing_at"].as_str().expect("when the read differed");
    assert!(at < status["verify"]["started_at"].as_str().expect("the verify"), "{status:#}");
    assert_eq!(status["next_step"]["step"], "set_flags", "{status:#}");
    edxapp.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn a_fraction_of_reads_is_sampled_and_none_when_off() {
    let mut site = MigrationSite::new(true).await;
    site.generate_old_rows(ROWS).await;
    site.set_flags(Stage::ExtendedTableReadingBoth.flags());
    let (module, _) = a_module_with_history(&site).await;
    for command in [&["init"][..], &["migrate"]] {
        let output = site.command(command).await;
        assert_eq!(output.status.code(), Some(0), "{}", outputs(&output));
    }
    for (sample, reads, compared) in [(0.25, 8, 2), (0.0, 4, 0)] {
        let config = shadow_config(&site, sample);
        let mut proxy = support::serve_binary(&[], &config);
        let mut log = BufReader::new(proxy.stderr.take().expect("its log")).lines();
        let address = support::address_logged(&mut log, "listening").await;
        let admin = support::address_logged(&mut log, "admin listening").await;
        let mut edxapp = support::connect(address, &support::app(), Some(&site.dbs.edxapp_db)).await;
        for _ in 0..reads {
            edxapp.query_drop(edxapp_read(&module.to_string())).await.expect("a read");
        }
        let counts = wait_for(admin, |counts| counts.compared() >= compared).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let counts = shadow_counts(admin).await.unwrap_or(counts);
        assert_eq!((counts.compared(), counts.skipped), (compared, 0), "sample {sample}: {counts:?}");
        edxapp.disconnect().await.expect("disconnect");
    }
}

/// The shadow counts of `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    matching: u64,
    differing: u64,
    inconclusive: u64,
    skipped: u64,
    failed: u64,
}

impl Counts {
    fn compared(&self) -> u64 {
        self.matching + self.differing + self.inconclusive
    }
}

/// Reads the shadow counters from the proxy's `/metrics`.
async fn shadow_counts(admin: SocketAddr) -> Option<Counts> {
    let (status, body) = csmh_proxy::admin::http_get(&admin.to_string(), "/metrics").await.ok()?;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("UTF-8");
    let count = |result: &str| {
        let series = format!("csmh_proxy_shadow_reads_total{{result=\"{result}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&series)).and_then(|value| value.trim().parse().ok())
    };
    Some(Counts {
        matching: count("matching")?,
        differing: count("differing")?,
        inconclusive: count("inconclusive")?,
        skipped: count("skipped")?,
        failed: count("failed")?,
    })
}

/// Waits until the counts satisfy `done`.
async fn wait_for(admin: SocketAddr, done: impl Fn(&Counts) -> bool) -> Counts {
    let mut last = None;
    for _ in 0..400 {
        last = shadow_counts(admin).await;
        if last.as_ref().is_some_and(&done) {
            return last.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the shadow counts never got there: {last:?}");
}

/// Reads the log until a line contains `what`.
async fn line_containing(log: &mut Lines<BufReader<ChildStderr>>, what: &str) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), log.next_line()).await.expect("the log goes on");
        let line = line.expect("the log").unwrap_or_else(|| panic!("the log ended before {what:?}"));
        if line.contains(what) {
            return line;
        }
    }
}

/// A module of its own with three old history rows (written as edxapp writes them), and their ids newest first.
async fn a_module_with_history(site: &MigrationSite) -> (u64, Vec<u64>) {
    let module = 987_654_321;
    let mut edxapp = site.edxapp().await;
    for attempt in 1..=3 {
        let state = format!("{{\"attempts\": {attempt}, \"secret_answer\": \"value-{attempt}\"}}");
        edxapp.query_drop(support::edx::edxapp_insert(module, &state)).await.expect("a history row");
    }
    let ids = edxapp
        .query(format!("SELECT id FROM {} WHERE student_module_id = {module} ORDER BY id DESC", site.old()))
        .await
        .expect("its ids");
    (module, ids)
}

/// The site's `proxy.toml` with the proxy's own ports, an admin listener, a `[backends.csmh]` login and
/// `[shadow] sample`.
fn shadow_config(site: &MigrationSite, sample: f64) -> std::path::PathBuf {
    let mut toml = site.dbs.proxy_toml(Stage::ExtendedTableReadingBoth.flags());
    toml.migration_account = None;
    let mut text = toml.render();
    if site.dbs.csmh.addr() == site.dbs.edxapp.addr() {
        let account = support::app();
        text = text.replacen(
            "[backends.csmh]\n",
            &format!("[backends.csmh]\nuser = \"{}\"\npassword = \"{}\"\n", account.user, account.password),
            1,
        );
    }
    text.push_str(&format!("\n[shadow]\nsample = {sample:?}\n\n[admin]\naddress = \"127.0.0.1:0\"\n"));
    let path = site.config_path.with_file_name(format!("shadow-{sample}.toml"));
    std::fs::write(&path, text).expect("write proxy.toml");
    path
}
