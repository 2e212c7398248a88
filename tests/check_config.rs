//! `csmh-proxy check-config`: the built binary on a good and on a bad file, its exit code and what it prints.

use std::path::Path;
use std::process::Output;

/// Runs `csmh-proxy check-config --config <path>`.
fn check_config(path: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("CSMH_PROXY_CONFIG")
        .output()
        .expect("the binary runs")
}

/// Writes `text` to a `proxy.toml` in a fresh temporary directory (kept alive by the returned guard).
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("the file is written");
    (dir, path)
}

#[test]
fn a_good_file_prints_the_routing_and_exits_zero() {
    let text = include_str!("../proxy.toml").replace("ENABLE_CSMH_EXTENDED = false", "ENABLE_CSMH_EXTENDED = true");
    let (_dir, path) = config_file(&text);
    let output = check_config(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for expected in [
        "configuration OK",
        "limits:        2000 connections, 256 logging in at once within 5 s; packets up to 67108864 bytes",
        "topology:        one server, 127.0.0.1:3306",
        "old table:       edxapp.courseware_studentmodulehistory",
        "ENABLE_CSMH_EXTENDED = true",
        "routing:         extended table only for reads",
        "INSERT          -> rewrite to the extended table",
        "UPDATE, DELETE  -> fan out to both tables, merged",
        "anything else   -> old table (passthrough)",
    ] {
        assert!(stdout.contains(expected), "no `{expected}` in:\n{stdout}");
    }
}

#[test]
fn a_bad_file_prints_the_line_and_key_and_exits_non_zero() {
    let text = include_str!("../proxy.toml").replace("READ_ONLY_FROM_CSMHE = false", "READ_ONLY_FROM_CSMHE = true");
    let line = text.lines().position(|line| line.starts_with("READ_ONLY_FROM_CSMHE")).expect("the flag's line") + 1;
    let (_dir, path) = config_file(&text);
    let output = check_config(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let expected = format!("configuration refused: line {line}, key `flags.READ_ONLY_FROM_CSMHE`: ");
    assert!(stderr.starts_with(&expected), "no `{expected}` in:\n{stderr}");
    assert!(stderr.contains("cannot be retired"), "{stderr}");
}

#[test]
fn a_syntax_error_on_the_password_line_names_the_line_but_never_the_password() {
    let secret = "s3cret-Pa55word";
    let cases = [
        (format!("password = \"{secret}"), 0),
        (format!("password = {secret}"), 0),
        (format!("password = \"\"\"\n{secret}\"\"\" x"), 1),
        (format!("password = \"\"\"\n{secret}\\q\"\"\""), 1),
    ];
    for (written, lines_below) in cases {
        let text = include_str!("../proxy.toml").replace("# password = \"...\"", &written);
        let line = text.lines().position(|line| line.starts_with("password =")).expect("the password's line");
        let line = line + 1 + lines_below;
        let (_dir, path) = config_file(&text);
        let output = check_config(&path);
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(printed.contains(&format!("line {line}")), "the line is named: {printed}");
        assert!(!printed.contains(secret), "the password is printed: {printed}");
    }
}

#[test]
fn a_password_of_any_type_or_under_any_spelling_of_its_key_is_never_printed() {
    // Checked: before, `check-config` printed the number as toml read it (`invalid type: integer `1234567``), the
    // rest of an array's line, and the whole line of a key written with an escape.
    let cases: [(&str, usize, &[&str]); 6] = [
        ("password = 1_234_567", 0, &["1_234_567", "1234567"]),
        ("password = 0xDEADBEEF", 0, &["DEADBEEF", "3735928559"]),
        ("password = 6.02e23", 0, &["6.02e23", "602000000000000000000000"]),
        ("password = [\"aa-1\", \"hunter2\"] x", 0, &["aa-1", "hunter2"]),
        ("password = [\n  \"aa-1\",\n  \"hunter2\" x\n]", 2, &["aa-1", "hunter2"]),
        ("\"p\\u0061ssword\" = \"hunter2\" x", 0, &["hunter2"]),
    ];
    for (written, lines_below, forms) in cases {
        let text = include_str!("../proxy.toml").replace("# password = \"...\"", written);
        let line = text.lines().position(|line| line == written.lines().next().unwrap_or_default());
        let line = line.expect("the password's line") + 1 + lines_below;
        let (_dir, path) = config_file(&text);
        let output = check_config(&path);
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{written}: {output:?}");
        assert!(printed.contains(&format!("line {line}")), "{written}: the line is named: {printed}");
        for form in forms {
            assert!(!printed.contains(form), "{written}: the password is printed ({form}): {printed}");
        }
    }
}

#[test]
fn a_missing_file_exits_non_zero() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = check_config(&dir.path().join("absent.toml"));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"), "{output:?}");
}

#[test]
fn unusable_tls_files_are_refused_naming_the_key_and_the_file() {
    let (dir, path) = config_file("");
    let certificate = dir.path().join("proxy.pem");
    std::fs::write(&certificate, "-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n")
        .expect("a broken certificate");
    let text = include_str!("../proxy.toml").replacen(
        "\n[backends.edxapp]\n",
        &format!(
            "\n[listen.tls]\ncertificate = \"{}\"\nkey = \"missing.key\"\n\n[backends.edxapp]\n",
            certificate.display()
        ),
        1,
    );
    std::fs::write(&path, text).expect("the file is written");
    let output = check_config(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr.contains("listen.tls.certificate") && stderr.contains("proxy.pem"), "{stderr}");
}

#[test]
fn the_kubernetes_example_configuration_is_valid() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["check-config", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/proxy.toml"))
        .env("CSMH_PROXY_EDXAPP_PASSWORD", "from-the-secret")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("admin:           0.0.0.0:6080"), "{stdout}");
}
