//! What the end-to-end benchmarks' reports share: medians with their spread, the machine and the versions a run
//! measured, and the rewriting of a bench's own part of `benches/RESULTS.md`.

// Each bench uses its own part of this module.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use csmh_proxy::sandbox::{MariaDb, find_program};
use mysql_async::prelude::Queryable;

/// The results file every bench writes its section of.
pub const RESULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/RESULTS.md");

/// A median with the smallest and largest value.
#[derive(Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values`, which must not be empty.
    pub fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
        Spread { median, min: values[0], max: values[n - 1] }
    }

    /// `median (min–max)`, whole numbers.
    pub fn rate(&self) -> String {
        format!("{:.0} ({:.0}–{:.0})", self.median, self.min, self.max)
    }

    /// `**median** (min–max)`, three decimals.
    pub fn ratio(&self) -> String {
        format!("**{:.3}** ({:.3}–{:.3})", self.median, self.min, self.max)
    }

    /// `median (min–max)` with one decimal, or `–` without a spread.
    pub fn micros(spread: Option<Spread>) -> String {
        spread.map_or_else(|| "–".to_owned(), |s| format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max))
    }
}

/// The server's version, as `SELECT VERSION()` gives it.
pub async fn mariadb_version(server: &MariaDb) -> anyhow::Result<String> {
    let mut root = mysql_async::Conn::new(server.root_opts()).await?;
    let version: Option<String> = root.query_first("SELECT VERSION()").await?;
    root.disconnect().await?;
    Ok(version.unwrap_or_default())
}

/// `MariaDB <version>, HAProxy version <version>, sysbench <version>, rustc <version>`.
pub fn versions(mariadb: &str) -> anyhow::Result<String> {
    let haproxy = first_line(Command::new(find_program("haproxy").context("haproxy")?).arg("-v"));
    Ok(format!(
        "MariaDB {mariadb}, {}, {}, {}",
        haproxy.split(" - ").next().unwrap_or_default(),
        first_line(Command::new(find_program("sysbench").context("sysbench")?).arg("--version")),
        first_line(Command::new("rustc").arg("-V")),
    ))
}

/// The date and time now, to the minute, in UTC.
pub fn now() -> String {
    first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
}

/// The first line a command prints, or `unknown`.
pub fn first_line(command: &mut Command) -> String {
    let output = command.stderr(Stdio::null()).output().ok();
    let text = output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().next().map_or_else(|| "unknown".to_owned(), |line| line.trim().to_owned())
}

/// `1 thread`, `8 threads`.
pub fn threads(n: u32) -> String {
    if n == 1 { "1 thread".to_owned() } else { format!("{n} threads") }
}

/// `2 × <CPU model>, <memory> GiB, Linux <release>`.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = proc_field(&cpuinfo, "model name").unwrap_or("unknown CPU");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 =
        proc_field(&meminfo, "MemTotal").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} × {model}, {:.1} GiB RAM, Linux {}", kib / 1024.0 / 1024.0, kernel.trim())
}

/// The value of the first `name: value` line of a `/proc` file.
fn proc_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// The 1, 5 and 15-minute load averages.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// `text` with everything from `markers.0` to `markers.1` (both included) replaced by `with`.
pub fn replace_between(text: &str, markers: (&str, &str), with: &str) -> Option<String> {
    let start = text.find(markers.0)?;
    let end = start + text[start..].find(markers.1)? + markers.1.len();
    Some(format!("{}{with}{}", &text[..start], &text[end..]))
}

/// Replaces `path` with `text` through a temporary file beside it, so that a reader never sees half of it.
pub fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&temporary, text).with_context(|| temporary.display().to_string())?;
    std::fs::rename(&temporary, path).with_context(|| path.display().to_string())?;
    Ok(())
}

/// Where a bench's report goes in the results file: its section's markers, the markers of the measured part
/// inside it (rewritten by each run, the notes around it kept), and the section's heading.
pub struct Section {
    pub markers: (&'static str, &'static str),
    pub measured: (&'static str, &'static str),
    pub heading: &'static str,
}

impl Section {
    /// Puts `measured` into the results file at `path`: between the measured markers if they are there, else as
    /// the whole section, which is added at the end of the file when it has none (the file is created if
    /// missing). Call it under the bench lock, so that two benches never rewrite the file at once.
    pub fn write(&self, path: &Path, measured: &str) -> anyhow::Result<()> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context(path.display().to_string()),
        };
        let block = format!("{}\n{measured}{}", self.measured.0, self.measured.1);
        let section = format!("{}\n{}\n\n{block}\n{}", self.markers.0, self.heading, self.markers.1);
        let updated = replace_between(&text, self.measured, &block)
            .or_else(|| replace_between(&text, self.markers, &section))
            .unwrap_or_else(|| format!("{}\n\n{section}\n", text.trim_end()));
        replace_file(path, &updated)
    }
}

/// What every end-to-end report opens with: when and how it was measured, on what, with which versions.
pub struct Header {
    pub date: String,
    pub command: String,
    pub machine: String,
    pub versions: String,
}

impl Header {
    /// Now, on this machine, for the report of `command`; `versions` as [`versions`] gives them.
    pub fn new(command: &str, versions: String) -> Header {
        Header { date: now(), command: command.to_owned(), machine: machine(), versions }
    }

    /// `Measured <date> with <command>.`, then the machine and the versions as list items.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "Measured {} with `{}`.\n", self.date, self.command);
        let _ = writeln!(out, "- Machine: {}.", self.machine);
        let _ = writeln!(out, "- Versions: {}.", self.versions);
    }
}

/// Prints a bench's report and, if `write`, puts it into its section of the results file; call it under the
/// bench lock, so that two benches never rewrite the file at once.
pub fn publish(report: &str, section: &Section, write: bool) -> anyhow::Result<()> {
    println!("\n{report}");
    if write {
        section.write(Path::new(RESULTS), report)?;
        println!("written to {RESULTS}");
    }
    Ok(())
}
