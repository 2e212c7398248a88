//! Migration throughput: `csmh-proxy migrate` against the usual ways of copying a table, on the same rows.
//!
//! ```sh
//! cargo bench --bench migrate                      # 200,000 rows, 3 rounds, about a minute
//! cargo bench --bench migrate -- --rows 500000 --rounds 5 --no-write
//! ```
//!
//! Two throw-away MariaDB servers on 127.0.0.1 (the sandbox's [`MariaDb::start`]); the old table on server A is
//! filled by the server with [`generate_history`]'s edX-shaped rows. Each round measures, in this order:
//! - **two servers, dump**: `mariadb-dump --single-transaction` of the old table piped into `mariadb` on
//!   server B (into a database of its own, table created by the dump);
//! - **two servers, tool**: `init`, then the measured `migrate` from A to B (the library, in this process,
//!   built with the bench profile);
//! - **one server, INSERT … SELECT**: one statement copying the whole table into the extended table on A;
//! - **one server, tool**: `init`, then the measured `migrate` on A.
//!
//! The targets are the issue's: across two servers at least as fast as the dump (ratio ≥ 1.0), on one server at
//! least 0.8 × the single `INSERT … SELECT`. The report gives rows per second (median of the rounds, and the
//! range) and the ratios, and is written, under the bench lock, as the "Migration throughput" section at the
//! end of `benches/RESULTS.md` (between `<!-- migrate:begin -->` and `<!-- migrate:end -->`) unless
//! `--no-write` is given.

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use csmh_proxy::config::Config;
use csmh_proxy::migrate::Site;
use csmh_proxy::migrate::copy::{MigrateArgs, migrate};
use csmh_proxy::migrate::init::init;
use csmh_proxy::migrate::schema::{COLUMN_LIST, extended_table_ddl};
use csmh_proxy::sandbox::{
    CSMH_DB, EDXAPP_DB, EXTENDED_TABLE, MariaDb, OLD_TABLE, create_edxapp_tables, generate_history, mariadb_binaries,
};
use csmh_proxy::topology::Topology;
use mysql_async::prelude::Queryable;
use support::BenchLock;

/// The results file and the markers of this bench's section.
const RESULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/RESULTS.md");
const SECTION: (&str, &str) = ("<!-- migrate:begin -->", "<!-- migrate:end -->");
/// The database the dump is loaded into on server B.
const DUMP_DB: &str = "dumpcopy";
/// The issue's targets: tool / dump across two servers, tool / INSERT … SELECT on one.
const TWO_SERVER_TARGET: f64 = 1.0;
const ONE_SERVER_TARGET: f64 = 0.8;

fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (a, b) = runtime.block_on(async { tokio::try_join!(MariaDb::start(), MariaDb::start()) })?;
    runtime.block_on(fill_old_table(&a, options.rows))?;
    let two_servers = site(&a, &b)?;
    let one_server = site(&a, &a)?;

    let lock = BenchLock::acquire();
    let load_before = load_average();
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let measured = Round {
            dump: dump_and_load(&a, &b)?,
            tool_two: runtime.block_on(tool(&two_servers, &a, &b))?,
            insert_select: runtime.block_on(insert_select(&a, &b))?,
            tool_one: runtime.block_on(tool(&one_server, &a, &b))?,
        };
        eprintln!("round {round}: {measured:?}");
        rounds.push(measured);
    }
    let load = format!("{load_before} before, {} after", load_average());
    let report = render(&options, &rounds, &load);
    println!("\n{report}");
    if options.write {
        write_results(Path::new(RESULTS), &report)?;
        println!("written to {RESULTS}");
    }
    drop(lock);
    Ok(())
}

/// The command line: `--rows N`, `--rounds N`, `--no-write` (cargo adds `--bench`, which is ignored).
struct Options {
    rows: u64,
    rounds: usize,
    write: bool,
    command: String,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut options = Options { rows: 200_000, rounds: 3, write: true, command: String::new() };
        let mut shown = Vec::new();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--bench" => continue,
                "--rows" => {
                    let rows = value("--rows")?;
                    options.rows = rows.parse()?;
                    shown.extend([arg, rows]);
                }
                "--rounds" => {
                    let rounds = value("--rounds")?;
                    options.rounds = rounds.parse()?;
                    shown.extend([arg, rounds]);
                }
                "--no-write" => options.write = false,
                other => bail!("unknown option {other}; expected --rows N, --rounds N, --no-write"),
            }
        }
        ensure!(options.rounds > 0 && options.rows > 0, "--rows and --rounds must be positive");
        let extra = if shown.is_empty() { String::new() } else { format!(" -- {}", shown.join(" ")) };
        options.command = format!("cargo bench --bench migrate{extra}");
        Ok(options)
    }
}

/// One round's four copies.
#[derive(Debug, Clone, Copy)]
struct Round {
    dump: Measured,
    tool_two: Measured,
    insert_select: Measured,
    tool_one: Measured,
}

/// One measured copy: its wall time and the CPU time each party used meanwhile.
#[derive(Debug, Clone, Copy)]
struct Measured {
    elapsed: Duration,
    cpu: Cpu,
}

/// CPU seconds: the client (this process for the tool, `mariadb-dump` and `mariadb` for the dump), server A
/// (the old table's) and server B.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    client: f64,
    a: f64,
    b: f64,
}

impl Cpu {
    /// The counters now: this process and its waited-for children, and the two servers.
    fn now(a: &MariaDb, b: &MariaDb) -> Cpu {
        Cpu {
            client: own_cpu(libc::RUSAGE_SELF) + own_cpu(libc::RUSAGE_CHILDREN),
            a: process_cpu(a.pid()),
            b: process_cpu(b.pid()),
        }
    }

    /// What was used from `before` to now.
    fn since(before: Cpu, a: &MariaDb, b: &MariaDb) -> Cpu {
        let now = Cpu::now(a, b);
        Cpu { client: now.client - before.client, a: now.a - before.a, b: now.b - before.b }
    }
}

/// User and system CPU seconds of this process (`RUSAGE_SELF`) or its waited-for children.
fn own_cpu(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(who, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// User and system CPU seconds of process `pid`, from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // Fields 14 and 15 of the file (utime, stime) are the 12th and 13th after the command name.
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Creates edxapp's tables on `a` and fills the old table with `rows` rows.
async fn fill_old_table(a: &MariaDb, rows: u64) -> anyhow::Result<()> {
    let mut conn = mysql_async::Conn::new(a.root_opts()).await?;
    create_edxapp_tables(&mut conn, EDXAPP_DB).await?;
    generate_history(&mut conn, EDXAPP_DB, rows).await?;
    conn.query_drop(format!("ANALYZE TABLE `{EDXAPP_DB}`.`{OLD_TABLE}`")).await?;
    Ok(())
}

/// The migration commands' view of the old table on `edxapp` and the extended table on `csmh`, as root.
fn site(edxapp: &MariaDb, csmh: &MariaDb) -> anyhow::Result<Site> {
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n[backends.edxapp]\naddress = \"{}\"\nuser = \"root\"\n\n\
         [backends.csmh]\naddress = \"{}\"\nuser = \"root\"\n",
        edxapp.addr(),
        csmh.addr()
    );
    Ok(Site::new(&Config::parse(&text)?)?)
}

/// Drops `database` on `server` if it is there.
async fn drop_database(server: &MariaDb, database: &str) -> anyhow::Result<()> {
    let mut conn = mysql_async::Conn::new(server.root_opts()).await?;
    conn.query_drop(format!("DROP DATABASE IF EXISTS `{database}`")).await?;
    Ok(())
}

/// `mariadb-dump` of the old table on `a` piped into `mariadb` on `b`.
fn dump_and_load(a: &MariaDb, b: &MariaDb) -> anyhow::Result<Measured> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        drop_database(b, DUMP_DB).await?;
        let mut conn = mysql_async::Conn::new(b.root_opts()).await?;
        conn.query_drop(format!("CREATE DATABASE `{DUMP_DB}`")).await?;
        anyhow::Ok(())
    })?;
    let client = &mariadb_binaries()?.client;
    let dump = client.with_file_name("mariadb-dump");
    let login = |server: &MariaDb| {
        format!("--no-defaults --protocol=TCP --host=127.0.0.1 --port={} --user=root", server.addr().port())
    };
    let script = format!(
        "set -o pipefail; {} {} --single-transaction {EDXAPP_DB} {OLD_TABLE} | {} {} {DUMP_DB}",
        dump.display(),
        login(a),
        client.display(),
        login(b)
    );
    let (started, cpu) = (Instant::now(), Cpu::now(a, b));
    let status = std::process::Command::new("bash").arg("-c").arg(&script).stdin(Stdio::null()).status()?;
    let measured = Measured { elapsed: started.elapsed(), cpu: Cpu::since(cpu, a, b) };
    ensure!(status.success(), "{script}: {status}");
    Ok(measured)
}

/// `init` then the measured `migrate` of `site`, into a fresh extended table on its `csmh` server (`a` or `b`).
async fn tool(site: &Site, a: &MariaDb, b: &MariaDb) -> anyhow::Result<Measured> {
    drop_database(if site.topology == Topology::OneServer { a } else { b }, CSMH_DB).await?;
    init(site, 10_000).await?;
    let (started, cpu) = (Instant::now(), Cpu::now(a, b));
    let report = migrate(site, &MigrateArgs::default()).await?;
    let measured = Measured { elapsed: started.elapsed(), cpu: Cpu::since(cpu, a, b) };
    eprint!("{report}");
    Ok(measured)
}

/// One `INSERT … SELECT` of the whole old table into a fresh extended table on `a`.
async fn insert_select(a: &MariaDb, b: &MariaDb) -> anyhow::Result<Measured> {
    drop_database(a, CSMH_DB).await?;
    let mut conn = mysql_async::Conn::new(a.root_opts()).await?;
    conn.query_drop(format!("CREATE DATABASE `{CSMH_DB}`")).await?;
    let extended = format!("`{CSMH_DB}`.`{EXTENDED_TABLE}`");
    conn.query_drop(extended_table_ddl(&extended, 10_000_000)).await?;
    let (started, cpu) = (Instant::now(), Cpu::now(a, b));
    conn.query_drop(format!(
        "INSERT INTO {extended} ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM `{EDXAPP_DB}`.`{OLD_TABLE}`"
    ))
    .await?;
    Ok(Measured { elapsed: started.elapsed(), cpu: Cpu::since(cpu, a, b) })
}

/// The median and range of `values`.
fn median_and_range(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
    (median, values[0], values[n - 1])
}

/// Picks one of a round's copies.
type Pick = fn(&Round) -> Measured;

/// The report, as Markdown.
fn render(options: &Options, rounds: &[Round], load: &str) -> String {
    let rate = |pick: Pick| {
        median_and_range(rounds.iter().map(|r| options.rows as f64 / pick(r).elapsed.as_secs_f64()).collect())
    };
    let ratio = |ours: Pick, theirs: Pick| {
        median_and_range(
            rounds.iter().map(|r| theirs(r).elapsed.as_secs_f64() / ours(r).elapsed.as_secs_f64()).collect(),
        )
    };
    // CPU seconds per 100,000 rows, median of the rounds, for each party.
    let cpu = |pick: Pick| {
        let per = |part: fn(&Cpu) -> f64| {
            median_and_range(rounds.iter().map(|r| part(&pick(r).cpu) * 1e5 / options.rows as f64).collect()).0
        };
        (per(|c| c.client), per(|c| c.a), per(|c| c.b))
    };
    let rows: [(&str, &str, Pick); 4] = [
        ("two servers", "`mariadb-dump \\| mariadb`", |r| r.dump),
        ("two servers", "`csmh-proxy migrate` (streamed)", |r| r.tool_two),
        ("one server", "one `INSERT … SELECT`", |r| r.insert_select),
        ("one server", "`csmh-proxy migrate` (`INSERT … SELECT` per chunk)", |r| r.tool_one),
    ];
    let two = ratio(|r| r.tool_two, |r| r.dump);
    let one = ratio(|r| r.tool_one, |r| r.insert_select);
    let mut text = String::new();
    let _ = writeln!(text, "## Migration throughput\n");
    let _ = writeln!(
        text,
        "`{}` — {} rows of edX-shaped history (`sandbox::generate_history`: ids with gaps, states up to 520 \
         bytes), {} rounds; two MariaDB servers on this machine, the sandbox's settings; machine: {}; MariaDB {}; \
         measured {}; load average (1, 5, 15 min) {load}: other work on the machine slows the copies \
         unevenly, hence the ranges.\n",
        options.command,
        options.rows,
        options.rounds,
        machine(),
        mariadb_version(),
        today()
    );
    let _ = writeln!(
        text,
        "| topology | method | rows/s (median) | range | CPU s per 100k rows: client, server A, server B |\n\
         |---|---|---:|---|---|"
    );
    for (topology, method, pick) in rows {
        let (median, low, high) = rate(pick);
        let (client, a, b) = cpu(pick);
        let _ = writeln!(
            text,
            "| {topology} | {method} | {median:.0} | {low:.0}–{high:.0} | {client:.2}, {a:.2}, {b:.2} |"
        );
    }
    let verdict = |value: f64, target: f64| if value >= target { "met" } else { "missed" };
    let _ = writeln!(
        text,
        "\n- two servers, tool / dump: **{:.2}** (range {:.2}–{:.2}); target ≥ {TWO_SERVER_TARGET:.1}: {}",
        two.0,
        two.1,
        two.2,
        verdict(two.0, TWO_SERVER_TARGET)
    );
    let _ = writeln!(
        text,
        "- one server, tool / `INSERT … SELECT`: **{:.2}** (range {:.2}–{:.2}); target ≥ {ONE_SERVER_TARGET:.1}: {}",
        one.0,
        one.1,
        one.2,
        verdict(one.0, ONE_SERVER_TARGET)
    );
    let _ = writeln!(
        text,
        "\nReading: across two servers the insert on server B costs about the same CPU per row whichever client sends \
         it, and is where both methods spend their time (a little more with two writers inserting at once); the tool's client side costs about half of what \
         `mariadb-dump` and `mariadb` cost, and its two writers keep server B inserting on both cores while the \
         next chunk is read, chunks still committing in id order with the checkpoint. On one server the tool \
         pays, against one statement, a `LIMIT 1 OFFSET n` read per chunk to find where it ends and one commit \
         per chunk (about 0.5 s each)."
    );
    text
}

/// `2 × <CPU model>`.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").map(|rest| rest.trim_start_matches([' ', '\t', ':'])))
        .unwrap_or("unknown CPU");
    format!("{cpus} × {model}")
}

/// The servers' version, from `mariadbd --version`.
fn mariadb_version() -> String {
    let output =
        mariadb_binaries().ok().and_then(|b| std::process::Command::new(&b.mariadbd).arg("--version").output().ok());
    let text = output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.split_whitespace().skip_while(|word| *word != "Ver").nth(1).unwrap_or("unknown").to_owned()
}

/// The 1, 5 and 15-minute load averages.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Today's date (UTC), from `date`.
fn today() -> String {
    let output = std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    output.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

/// Puts `section` at the end of the results file, replacing this bench's earlier section wherever it is. The
/// file is read just before it is written, under the bench lock, so sections other benches wrote are kept.
fn write_results(path: &Path, section: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let block = format!("{}\n{section}{}\n", SECTION.0, SECTION.1);
    let without = match (text.find(SECTION.0), text.find(SECTION.1)) {
        (Some(start), Some(end)) if start < end => {
            let end = end + SECTION.1.len();
            let end = if text[end..].starts_with('\n') { end + 1 } else { end };
            format!("{}{}", &text[..start], &text[end..])
        }
        _ => text,
    };
    let updated = format!("{}\n\n{block}", without.trim_end());
    let temporary = path.with_extension("md.migrate.tmp");
    std::fs::write(&temporary, updated)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}
