//! What the client tests need installed beyond MariaDB: Debian packages (installed with apt-get when the tests
//! run as root, else a panic that says the command to run) and a Python virtual environment with packages from
//! PyPI, built once under the target directory and shared by every test binary.
//!
//! Nothing here skips a test: a missing tool is installed or the test fails saying how to install it.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, PoisonError};

pub use csmh_proxy::sandbox::find_program;
use csmh_proxy::sandbox::{install_packages, is_root};

/// Makes parallel tests of one binary install one at a time.
static APT: Mutex<()> = Mutex::new(());

/// Makes sure every Debian package in `packages` is installed, installing the missing ones with apt-get. A package counts as present when dpkg says it is installed or,
/// for a package named after its program (`sysbench`, `gcc`), when that program is on PATH.
///
/// Panics when a package is missing and this process is not root, naming the command to run, or when apt-get
/// fails. Blocking: call it from `spawn_blocking` or before a proxy starts on the test's runtime.
pub fn ensure_packages(packages: &[&str]) {
    let _one_at_a_time = APT.lock().unwrap_or_else(PoisonError::into_inner);
    let missing: Vec<&str> = packages.iter().copied().filter(|package| !is_present(package)).collect();
    if missing.is_empty() {
        return;
    }
    let list = missing.join(" ");
    assert!(
        is_root(),
        "{list} not installed; install with: sudo apt-get update && \
         sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {list}"
    );
    eprintln!("installing {list} with apt-get");
    install_packages(&missing).unwrap_or_else(|e| panic!("{e}"));
    let still_missing: Vec<&str> = missing.into_iter().filter(|package| !is_present(package)).collect();
    assert!(still_missing.is_empty(), "still missing after apt-get install: {}", still_missing.join(" "));
}

fn is_present(package: &str) -> bool {
    find_program(package).is_some() || dpkg_installed(package)
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success() && output.stdout == b"installed")
}

/// Panics with `what`, its exit status and its output unless it succeeded.
pub fn assert_succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Python

/// A Python virtual environment to build: its directory name, what pip installs in it, and what proves it works.
pub struct Venv<'a> {
    /// The directory's name under the target directory's scratch space.
    pub name: &'a str,
    /// pip requirement specifiers, e.g. `mysqlclient==2.2.7`.
    pub requirements: &'a [&'a str],
    /// Python statements that succeed once the environment is usable, e.g. `import MySQLdb`.
    pub check: &'a str,
    /// Debian packages that building the requirements needs (compilers, C headers, pkg-config files).
    pub build_packages: &'a [&'a str],
}

/// Python's `mysqlclient` (Django's MySQL driver), at the version the tests were written against.
const MYSQLCLIENT_REQUIREMENT: &str = "mysqlclient==2.2.7";

/// The virtual environment with Python's `mysqlclient`; building it needs the MariaDB client library's headers and
/// a C compiler.
pub const MYSQLCLIENT: Venv<'static> = Venv {
    name: "mysqlclient-venv",
    requirements: &[MYSQLCLIENT_REQUIREMENT],
    check: "import MySQLdb",
    build_packages: &["libmariadb-dev", "pkg-config", "gcc"],
};

/// MariaDB Connector/Python (the `mariadb` package, built on the MariaDB Connector/C of `libmariadb-dev`), for
/// [`MYSQLCLIENT`]'s `python_with`: its binary cursors execute statements directly (Connector/C's
/// `mariadb_stmt_execute_direct`).
pub const MARIADB_CONNECTOR_PYTHON: &str = "mariadb==1.1.14";

/// Django's LTS release that edx-platform ran on up to Teak (MariaDB 10.11 and Python 3.11 supported), installed
/// into [`MYSQLCLIENT`] by [`django_4_2_python`].
pub const DJANGO_4_2: &str = "4.2.30";

/// The Python interpreter of the [`MYSQLCLIENT`] environment with Django [`DJANGO_4_2`] installed in it. Blocking,
/// like [`ensure_packages`].
pub fn django_4_2_python() -> PathBuf {
    let check = format!("import django, sys; sys.exit(django.get_version() != '{DJANGO_4_2}')");
    MYSQLCLIENT.python_with(&[&format!("Django=={DJANGO_4_2}")], &check)
}

/// Django's release that Open edX runs from Ulmo on (edx-platform pins Django 5.2, an LTS release), as a literal
/// for [`DJANGO_5_2`] and [`DJANGO_5_2_VENV`]'s requirement.
macro_rules! django_5_2 {
    () => {
        "5.2.19"
    };
}

/// Django's release that Open edX runs from Ulmo on, installed in [`DJANGO_5_2_VENV`].
pub const DJANGO_5_2: &str = django_5_2!();

/// A virtual environment of its own with `mysqlclient` and Django [`DJANGO_5_2`], so that the [`MYSQLCLIENT`]
/// environment keeps Django 4.2.
pub const DJANGO_5_2_VENV: Venv<'static> = Venv {
    name: "django52-venv",
    requirements: &[MYSQLCLIENT_REQUIREMENT, concat!("Django==", django_5_2!())],
    check: "import MySQLdb, django",
    build_packages: MYSQLCLIENT.build_packages,
};

/// Virtual environments this process has already checked: name → interpreter.
static VENVS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// Extra packages this process has already checked, as `<venv name>: <requirements>`.
static EXTRAS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Venv<'_> {
    /// The environment's Python interpreter, building the environment first unless a usable one with the same
    /// requirements is already there. Test binaries running at the same time take turns through a lock file.
    /// Blocking, like [`ensure_packages`].
    pub fn python(&self) -> PathBuf {
        let mut known = VENVS.lock().unwrap_or_else(PoisonError::into_inner);
        let known = known.get_or_insert_with(HashMap::new);
        if let Some(python) = known.get(self.name) {
            return python.clone();
        }
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(scratch).unwrap_or_else(|e| panic!("cannot create {}: {e}", scratch.display()));
        let _lock = FileLock::exclusive(&scratch.join(format!("{}.lock", self.name)));
        let dir = scratch.join(self.name);
        let python = dir.join("bin").join("python");
        if !self.is_ready(&dir, &python) {
            self.build(&dir, &python);
        }
        known.insert(self.name.to_owned(), python.clone());
        python
    }

    /// The environment's Python interpreter (see [`Venv::python`]) with `extras` (pip requirement specifiers)
    /// installed in it too, unless `check` already succeeds there. The environment's own requirements and marker
    /// stay as they are, so test binaries that need only those keep reusing it; when it is rebuilt, the extras
    /// are installed again by the next caller. Blocking, like [`ensure_packages`].
    pub fn python_with(&self, extras: &[&str], check: &str) -> PathBuf {
        let python = self.python();
        let mut known = EXTRAS.lock().unwrap_or_else(PoisonError::into_inner);
        let key = format!("{}: {}", self.name, extras.join(" "));
        if known.contains(&key) {
            return python;
        }
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let _lock = FileLock::exclusive(&scratch.join(format!("{}.lock", self.name)));
        if !run_python(&python, check).status.success() {
            eprintln!("installing {} into the Python virtual environment {}", extras.join(" "), self.name);
            let pip = Command::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"])
                .args(extras)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run pip: {e}"));
            assert_succeeded(&pip, &format!("pip install {}", extras.join(" ")));
            assert_succeeded(&run_python(&python, check), &format!("python -c '{check}' after pip install"));
        }
        known.push(key);
        python
    }

    /// The file that records which requirements the environment was built with.
    fn marker(dir: &Path) -> PathBuf {
        dir.join("csmh-requirements.txt")
    }

    fn is_ready(&self, dir: &Path, python: &Path) -> bool {
        let built_with = std::fs::read_to_string(Self::marker(dir)).unwrap_or_default();
        built_with == self.requirements.join("\n") && run_python(python, self.check).status.success()
    }

    fn build(&self, dir: &Path, python: &Path) {
        let system = system_python();
        ensure_packages(&[self.build_packages, &python_build_packages(&system)].concat());
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("cannot remove {}: {e}", dir.display()));
        }
        eprintln!("creating a Python virtual environment with {}", self.requirements.join(" "));
        let venv = Command::new(&system).args(["-m", "venv"]).arg(dir).output();
        let venv = venv.unwrap_or_else(|e| panic!("cannot run {}: {e}", system.display()));
        assert_succeeded(&venv, &format!("{} -m venv {}", system.display(), dir.display()));
        let pip = Command::new(python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"])
            .args(self.requirements)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run pip: {e}"));
        assert_succeeded(&pip, &format!("pip install {}", self.requirements.join(" ")));
        assert_succeeded(&run_python(python, self.check), &format!("python -c '{}' after pip install", self.check));
        std::fs::write(Self::marker(dir), self.requirements.join("\n"))
            .unwrap_or_else(|e| panic!("cannot write in {}: {e}", dir.display()));
    }
}

fn run_python(python: &Path, code: &str) -> Output {
    Command::new(python)
        .args(["-c", code])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()))
}

/// The first `python3` that runs: the one on PATH, else Debian's.
fn system_python() -> PathBuf {
    [find_program("python3"), Some(PathBuf::from("/usr/bin/python3"))]
        .into_iter()
        .flatten()
        .find(|python| run_python(python, "import sys").status.success())
        .unwrap_or_else(|| {
            panic!("no working python3; install it with: sudo apt-get install -y python3 python3-venv python3-dev")
        })
}

/// The Debian packages `python` lacks to create a virtual environment (`ensurepip`, from python3-venv) and to
/// compile C extensions (`Python.h`, from python3-dev).
fn python_build_packages(python: &Path) -> Vec<&'static str> {
    let has_venv = run_python(python, "import ensurepip, venv").status.success();
    let headers = "import os, sys, sysconfig; \
                   sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))";
    let has_headers = run_python(python, headers).status.success();
    [(!has_venv).then_some("python3-venv"), (!has_headers).then_some("python3-dev")].into_iter().flatten().collect()
}

/// An exclusive `flock` on a file, released when dropped (or when the process dies).
struct FileLock(File);

impl FileLock {
    fn exclusive(path: &Path) -> FileLock {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        // SAFETY: the descriptor is open for as long as `file` lives.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "cannot lock {}: {}", path.display(), std::io::Error::last_os_error());
        FileLock(file)
    }
}
