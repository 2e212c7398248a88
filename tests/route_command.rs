//! `csmh-proxy route`: an operator can see what each statement would become under a configuration's flags.

use std::io::Write;
use std::process::{Command, Stdio};

fn route(flags: &str, statements: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let example = include_str!("../proxy.toml");
    let mut text = example.to_owned();
    for (flag, value) in flags.split(',').filter(|f| !f.is_empty()).map(|f| (f, "true")) {
        text = text.replace(&format!("{flag} = false"), &format!("{flag} = {value}"));
    }
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["route", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(statements.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn shows_each_statements_route_and_rewrite() {
    let out = route(
        "ENABLE_CSMH_EXTENDED,READ_ONLY_FROM_CSMHE",
        "SELECT 1\nDELETE FROM courseware_studentmodulehistory WHERE id = 3\nTRUNCATE courseware_studentmodulehistory\n",
    );
    assert!(out.contains("old table retired"), "{out}");
    assert!(out.contains("SELECT 1\n  -> passthrough"), "{out}");
    assert!(
        out.contains("DELETE FROM `edxapp_csmh`.`coursewarehistoryextended_studentmodulehistoryextended` WHERE id = 3"),
        "{out}"
    );
    assert!(out.contains("TRUNCATE courseware_studentmodulehistory\n  -> block: ERROR 1142 (42000)"), "{out}");
}

#[test]
fn with_the_flags_off_everything_passes_through() {
    let out = route("", "INSERT INTO courseware_studentmodulehistory (state) VALUES ('s')\n");
    assert!(out.contains("-> passthrough"), "{out}");
}
