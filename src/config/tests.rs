//! Parsing and validation of `proxy.toml`: good files, and each kind of bad file with the line and key its
//! message names.

use super::*;
use crate::history::{Flag, Flags};

/// The smallest valid file: one server, everything else defaulted. Lines 7-8 are `[backends.csmh]`.
pub(crate) const MINIMAL: &str = r#"[listen]
address = "127.0.0.1:6033"

[backends.edxapp]
address = "127.0.0.1:3306"

[backends.csmh]
address = "127.0.0.1:3306"
"#;

/// `MINIMAL` with `extra` appended from line 9 on.
fn minimal_with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

/// `MINIMAL` with the `csmh` backend on another server, `csmh-db:3306`, and `extra` lines in its table.
fn two_servers_with(extra: &str) -> String {
    MINIMAL.replacen(
        "[backends.csmh]\naddress = \"127.0.0.1:3306\"\n",
        &format!("[backends.csmh]\naddress = \"csmh-db:3306\"\n{extra}"),
        1,
    )
}

/// The error `text` is refused with; panics if it is accepted.
fn refused(text: &str) -> ConfigError {
    match Config::parse(text) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(error) => error,
    }
}

/// Asserts that `text` is refused with a message naming `line`, `key` and containing `fragment`.
fn assert_refused(text: &str, line: usize, key: &str, fragment: &str) {
    let error = refused(text);
    let message = error.to_string();
    assert!(message.contains(&format!("line {line},")), "no line {line} in: {message}");
    assert!(message.contains(&format!("`{key}`")), "no key {key} in: {message}");
    assert!(message.contains(fragment), "no `{fragment}` in: {message}");
    assert!(!message.contains('\n'), "not one line: {message}");
    let at = error.location().expect("a location");
    assert_eq!((at.line, at.key.as_deref()), (Some(line), Some(key)), "{message}");
}

#[test]
fn the_example_file_is_valid_and_has_every_flag_off() {
    let config = Config::parse(include_str!("../../proxy.toml")).expect("proxy.toml is valid");
    assert_eq!(config.flags, Flags::default());
    assert!(config.backends.same_server());
    assert!(config.admin.is_some());
    assert!(report(&config).starts_with("configuration OK\n"));
}

#[test]
fn the_example_file_documents_every_key() {
    let example = include_str!("../../proxy.toml");
    let keys = [
        "address",
        "shutdown_timeout_secs",
        "max_connections",
        "max_handshakes",
        "handshake_timeout_secs",
        "max_packet_bytes",
        "max_parsed_statement_bytes",
        "connect_timeout_secs",
        "read_timeout_secs",
        "keep_idle",
        "grants_valid_secs",
        "user",
        "password",
        "password_env",
        "old_table",
        "extended_table",
        "id_offset",
        "ENABLE_CSMH_EXTENDED",
        "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES",
        "READ_ONLY_FROM_CSMHE",
    ];
    for key in keys {
        assert!(example.contains(&format!("{key} =")), "{key} is not in the example");
    }
}

#[test]
fn keep_idle_applies_to_csmh_only_and_is_bounded() {
    let config = Config::parse(MINIMAL).unwrap();
    assert_eq!(config.backends.csmh_keep_idle(), 8, "the default");
    let with = |table: &str, value: usize| {
        let text = format!("[backends.{table}]\naddress = \"127.0.0.1:3306\"\nkeep_idle = {value}\n");
        let text = MINIMAL.replacen(&format!("[backends.{table}]\naddress = \"127.0.0.1:3306\"\n"), &text, 1);
        Config::parse(&text).map(|config| config.backends.csmh_keep_idle())
    };
    assert_eq!(with("csmh", 0).expect("0 keeps none"), 0);
    assert_eq!(with("csmh", 64).expect("the most"), 64);
    let too_many = with("csmh", 65).expect_err("more than 64").to_string();
    assert!(too_many.contains("backends.csmh.keep_idle") && too_many.contains("at most 64"), "{too_many}");
    let on_edxapp = with("edxapp", 2).expect_err("not on edxapp").to_string();
    assert!(on_edxapp.contains("backends.edxapp.keep_idle"), "{on_edxapp}");
}

#[test]
fn a_minimal_file_gets_the_defaults() {
    let config = Config::parse(MINIMAL).unwrap();
    assert_eq!(config.listen.shutdown_timeout_secs, 10);
    assert_eq!((config.listen.max_connections, config.listen.max_handshakes), (2000, 256));
    assert_eq!(config.listen.handshake_timeout_secs, 5);
    assert_eq!((config.listen.max_packet_bytes, config.listen.max_parsed_statement_bytes), (64 << 20, 4 << 20));
    assert_eq!(config.backends.csmh.connect_timeout_secs, 5);
    assert_eq!(config.backends.csmh.read_timeout_secs, 30);
    assert_eq!(config.admin, None);
    assert_eq!(config.history, HistoryTables::default());
    assert_eq!(config.history.old().unwrap().table(), "courseware_studentmodulehistory");
    assert_eq!(config.history.extended().unwrap().schema(), "edxapp_csmh");
    assert_eq!(config.history.id_offset, 10_000);
    assert_eq!(config.flags, Flags::default());
}

#[test]
fn an_unknown_key_names_its_line_and_path() {
    let text = MINIMAL.replace("address = \"127.0.0.1:6033\"", "adress = \"127.0.0.1:6033\"");
    assert_refused(&text, 2, "listen.adress", "unknown field `adress`");
}

#[test]
fn an_unknown_flag_names_its_line_and_path() {
    assert_refused(
        &minimal_with("[flags]\nENABLE_CSMH_EXTENDED = true\nREAD_ONLY_FROM_CSMH = true\n"),
        11,
        "flags.READ_ONLY_FROM_CSMH",
        "unknown field",
    );
}

#[test]
fn an_unknown_table_names_its_line() {
    assert_refused(&minimal_with("\n[listen.proxy_protocol]\nv = 2\n"), 10, "listen.proxy_protocol", "unknown field");
}

#[test]
fn tls_settings_are_read_and_checked() {
    let config = Config::parse(&minimal_with(
        "\n[listen.tls]\ncertificate = 'proxy.pem'\nkey = 'proxy.key'\nrequired = true\n\n\
         [backends.edxapp.tls]\nmode = 'verify-identity'\nca = 'ca.pem'\n",
    ))
    .unwrap();
    let listen = config.listen.tls.unwrap();
    assert!(listen.required);
    let files = crate::config::ListenCertificate::Files { certificate: "proxy.pem".into(), key: "proxy.key".into() };
    assert_eq!(listen.certificate, files);
    let self_signed = Config::parse(&minimal_with("\n[listen.tls]\nself_signed = true\n")).unwrap();
    assert_eq!(self_signed.listen.tls.unwrap().certificate, crate::config::ListenCertificate::SelfSigned);
    for (table, complaint) in [
        ("self_signed = true\nkey = 'proxy.key'", "takes no `certificate` or `key`"),
        ("required = true", "needs `certificate` and `key`, or `self_signed = true`"),
        ("certificate = 'proxy.pem'", "`certificate` needs its `key`"),
        ("key = 'proxy.key'", "`key` needs its `certificate`"),
    ] {
        let refused = Config::parse(&minimal_with(&format!("\n[listen.tls]\n{table}\n"))).unwrap_err().to_string();
        assert!(refused.contains("listen.tls") && refused.contains(complaint), "{table}: {refused}");
    }
    assert_eq!(config.backends.edxapp.tls.mode, crate::config::TlsMode::VerifyIdentity);
    assert_eq!(config.backends.csmh.tls.mode, crate::config::TlsMode::Preferred, "MySQL's default");
    let refused = Config::parse(&minimal_with("\n[backends.edxapp.tls]\nmode = 'verify-ca'\n")).unwrap_err();
    assert!(
        refused.to_string().contains("backends.edxapp.tls.mode") && refused.to_string().contains("`ca`"),
        "{refused}"
    );
    let key = "\n[backends.edxapp.tls]\nserver_public_key = 'public_key.pem'\n";
    let refused = Config::parse(&minimal_with(key)).unwrap_err();
    assert!(refused.to_string().contains("backends.edxapp.tls.server_public_key"), "only csmh's: {refused}");
    let refused = Config::parse(&minimal_with("\n[backends.csmh.tls]\nmode = 'sometimes'\n")).unwrap_err();
    assert!(refused.to_string().contains("unknown variant"), "{refused}");
    let refused =
        Config::parse(&minimal_with("\n[backends.csmh.tls]\nmode = 'required'\ncertificate = 'c.pem'\n")).unwrap_err();
    assert!(refused.to_string().contains("backends.csmh.tls.certificate"), "{refused}");
}

#[test]
fn a_wrong_type_names_its_line_and_path() {
    assert_refused(&minimal_with("connect_timeout_secs = \"5\"\n"), 9, "backends.csmh.connect_timeout_secs", "u64");
    assert_refused(&minimal_with("[flags]\nENABLE_CSMH_EXTENDED = 1\n"), 10, "flags.ENABLE_CSMH_EXTENDED", "bool");
}

#[test]
fn a_missing_key_names_the_table_that_lacks_it() {
    let text = MINIMAL.replacen("address = \"127.0.0.1:3306\"\n", "", 1);
    assert_refused(&text, 4, "backends.edxapp", "missing field `address`");
}

#[test]
fn a_missing_table_is_named() {
    let message = refused("[listen]\naddress = \"127.0.0.1:6033\"\n").to_string();
    assert!(message.contains("missing field `backends`"), "{message}");
}

#[test]
fn bad_toml_names_its_line_and_quotes_it() {
    let error = refused(&minimal_with("[flags]\nENABLE_CSMH_EXTENDED = yes\n"));
    let message = error.to_string();
    assert!(message.starts_with("line 10, column"), "{message}");
    assert!(message.contains("`ENABLE_CSMH_EXTENDED = yes`"), "{message}");
    assert!(matches!(error, ConfigError::Syntax { .. }));
}

#[test]
fn a_key_given_twice_names_its_line() {
    let message = refused(&minimal_with("address = \"127.0.0.1:3307\"\n")).to_string();
    assert!(message.starts_with("line 9,"), "{message}");
    assert!(message.contains("duplicate key"), "{message}");
}

#[test]
fn retiring_the_old_table_while_it_is_written_is_refused_with_the_reason() {
    let text =
        minimal_with("\n[flags]\nENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES = true\nREAD_ONLY_FROM_CSMHE = true\n");
    assert_refused(&text, 12, "flags.READ_ONLY_FROM_CSMHE", "new history is still written to the old table");
    assert!(matches!(refused(&text), ConfigError::Invalid { .. }));
}

#[test]
fn every_accepted_flag_combination_parses() {
    for (extended, multiple, read_only) in [(false, false, false), (true, true, false), (true, false, true)] {
        let text = minimal_with(&format!(
            "[flags]\nENABLE_CSMH_EXTENDED = {extended}\nENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES = {multiple}\n\
             READ_ONLY_FROM_CSMHE = {read_only}\n"
        ));
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.flags.is_on(Flag::ReadOnlyFromCsmhe), read_only);
    }
}

#[test]
fn table_names_must_be_schema_qualified() {
    let text = minimal_with("[history]\nold_table = \"courseware_studentmodulehistory\"\n");
    assert_refused(&text, 10, "history.old_table", "write it as `schema.table`");
}

#[test]
fn table_names_must_be_plain_identifiers() {
    let text = minimal_with("[history]\nextended_table = \"edxapp_csmh.`extended`\"\n");
    assert_refused(&text, 10, "history.extended_table", "not a plain identifier");
}

#[test]
fn the_two_tables_must_differ() {
    let text = minimal_with("[history]\nold_table = \"edxapp.history\"\nextended_table = \"EDXAPP.history\"\n");
    assert_refused(&text, 11, "history.extended_table", "same table as `history.old_table`");
}

#[test]
fn the_id_offset_is_read_from_history() {
    let config = Config::parse(&minimal_with("[history]\nid_offset = 1000000\n")).unwrap();
    assert_eq!(config.history.id_offset, 1_000_000);
    let config = Config::parse(&minimal_with(&format!("[history]\nid_offset = {MAX_ID_OFFSET}\n"))).unwrap();
    assert_eq!(config.history.id_offset, MAX_ID_OFFSET);
}

#[test]
fn the_id_offset_must_be_positive_and_at_most_2_to_the_32() {
    assert_refused(&minimal_with("[history]\nid_offset = 0\n"), 10, "history.id_offset", "at least 1");
    let too_large = minimal_with(&format!("[history]\nid_offset = {}\n", MAX_ID_OFFSET + 1));
    assert_refused(&too_large, 10, "history.id_offset", "at most 4294967296");
    let negative = minimal_with("[history]\nid_offset = -5\n");
    assert!(refused(&negative).to_string().contains("history.id_offset"), "{}", refused(&negative));
}

#[test]
fn addresses_must_be_host_and_port() {
    let cases = [
        ("127.0.0.1", "no port"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:65536", "not a number"),
        (":3306", "no host"),
        ("::1:3306", "in brackets"),
        ("[::g]:3306", "not an IPv6 address"),
        ("db host:3306", "not a host name"),
        ("127.0.0.1:0", "port 0"),
    ];
    for (address, fragment) in cases {
        let text = MINIMAL.replace("address = \"127.0.0.1:3306\"\n\n", &format!("address = \"{address}\"\n\n"));
        assert_refused(&text, 5, "backends.edxapp.address", fragment);
    }
}

#[test]
fn listeners_accept_port_zero_and_ipv6() {
    let text = MINIMAL.replace("127.0.0.1:6033", "[::1]:0");
    let text = format!("{text}[admin]\naddress = \"localhost:0\"\n");
    let config = Config::parse(&text).unwrap();
    assert_eq!(config.listen.address, "[::1]:0");
}

#[test]
fn listen_and_admin_addresses_are_checked() {
    assert_refused(&MINIMAL.replace("127.0.0.1:6033", "6033"), 2, "listen.address", "no port");
    assert_refused(&minimal_with("[admin]\naddress = \"127.0.0.1\"\n"), 10, "admin.address", "no port");
}

#[test]
fn timeouts_must_be_positive() {
    assert_refused(&minimal_with("connect_timeout_secs = 0\n"), 9, "backends.csmh.connect_timeout_secs", "at least 1");
    let text =
        MINIMAL.replace("address = \"127.0.0.1:6033\"", "address = \"127.0.0.1:6033\"\nshutdown_timeout_secs = 0");
    assert_refused(&text, 3, "listen.shutdown_timeout_secs", "at least 1");
}

#[test]
fn listen_limits_must_let_clients_in() {
    let with =
        |line: &str| MINIMAL.replace("address = \"127.0.0.1:6033\"", &format!("address = \"127.0.0.1:6033\"\n{line}"));
    assert_refused(&with("handshake_timeout_secs = 0"), 3, "listen.handshake_timeout_secs", "at least 1");
    assert_refused(&with("max_connections = 0"), 3, "listen.max_connections", "at least 1");
    assert_refused(&with("max_handshakes = 0"), 3, "listen.max_handshakes", "at least 1");
    assert_refused(&with("max_parsed_statement_bytes = 0"), 3, "listen.max_parsed_statement_bytes", "at least 1");
    assert_refused(&with("max_packet_bytes = 100"), 3, "listen.max_packet_bytes", "at least 1024");
    assert_refused(&with("max_packet_bytes = 2147483648"), 3, "listen.max_packet_bytes", "at most 1073741824");
}

#[test]
fn preconnect_defaults_and_limits() {
    let config = Config::parse(MINIMAL).unwrap();
    assert_eq!(config.backends.edxapp_preconnect(), Preconnect { max: 4, max_age_ms: 5000 });
    let edxapp = |lines: &str| {
        MINIMAL.replace(
            "[backends.edxapp]\naddress = \"127.0.0.1:3306\"\n",
            &format!("[backends.edxapp]\naddress = \"127.0.0.1:3306\"\n\n[backends.edxapp.preconnect]\n{lines}\n"),
        )
    };
    let off = Config::parse(&edxapp("max = 0")).unwrap();
    assert!(!off.backends.edxapp_preconnect().is_on());
    assert_eq!(off.backends.edxapp_preconnect().max_age_ms, 5000, "an unwritten key keeps its default");
    assert_refused(&edxapp("max = 33"), 8, "backends.edxapp.preconnect.max", "at most 32");
    assert_refused(&edxapp("max_age_ms = 50"), 8, "backends.edxapp.preconnect.max_age_ms", "connect_timeout");
    assert_refused(&edxapp("max_age_ms = 60001"), 8, "backends.edxapp.preconnect.max_age_ms", "from 100 to 60000");
    assert_refused(
        &minimal_with("\n[backends.csmh.preconnect]\nmax = 2\n"),
        10,
        "backends.csmh.preconnect",
        "`backends.edxapp` only",
    );
}

#[test]
fn password_and_password_env_are_exclusive() {
    let text = minimal_with("user = \"edxapp001\"\npassword = \"secret\"\npassword_env = \"PATH\"\n");
    assert_refused(&text, 10, "backends.csmh.password", "keep only one");
}

#[test]
fn password_env_must_name_a_set_variable() {
    let text = minimal_with("user = \"edxapp001\"\npassword_env = \"CSMH_PROXY_TEST_VARIABLE_THAT_IS_NEVER_SET\"\n");
    assert_refused(
        &text,
        10,
        "backends.csmh.password_env",
        "CSMH_PROXY_TEST_VARIABLE_THAT_IS_NEVER_SET, which is not set",
    );
}

#[test]
fn a_password_needs_a_user() {
    assert_refused(&minimal_with("password = \"secret\"\n"), 7, "backends.csmh.user", "no `user`");
}

#[test]
fn two_servers_need_a_csmh_user() {
    assert_refused(&two_servers_with(""), 7, "backends.csmh.user", "another server");
    let config = Config::parse(&two_servers_with("user = \"edxapp001\"\npassword_env = \"PATH\"\n")).unwrap();
    assert!(!config.backends.same_server());
}

#[test]
fn every_problem_is_listed_on_one_line() {
    let text = minimal_with("connect_timeout_secs = 0\n[history]\nold_table = \"history\"\n");
    let error = refused(&text);
    let message = error.to_string();
    assert!(message.starts_with("2 problems: line 9, key `backends.csmh.connect_timeout_secs`"), "{message}");
    assert!(message.contains("; line 11, key `history.old_table`"), "{message}");
    assert!(!message.contains('\n'));
}

#[test]
fn same_server_compares_addresses_as_written() {
    let mut config = Config::parse(MINIMAL).unwrap();
    config.backends.csmh.address = "127.0.0.1:3306 ".to_owned();
    assert!(config.backends.same_server());
    config.backends.csmh.address = "localhost:3306".to_owned();
    assert!(!config.backends.same_server());
}

#[test]
fn passwords_resolve_from_the_file_or_the_environment() {
    let mut backend = Config::parse(MINIMAL).unwrap().backends.csmh;
    assert_eq!(backend.password(), Ok(None));
    backend.password = Some("secret".to_owned());
    assert_eq!(backend.password(), Ok(Some("secret".to_owned())));
    backend.password = None;
    backend.password_env = Some("PATH".to_owned());
    assert_eq!(backend.password(), Ok(std::env::var("PATH").ok()));
    backend.password_env = Some("CSMH_PROXY_TEST_VARIABLE_THAT_IS_NEVER_SET".to_owned());
    assert!(matches!(backend.password(), Err(PasswordError::VariableUnset { .. })));
}

#[test]
fn debug_output_hides_the_password() {
    let config = Config::parse(&minimal_with("user = \"edxapp001\"\npassword = \"hunter2\"\n")).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn a_config_built_in_code_is_validated_without_lines() {
    let mut config = Config::parse(MINIMAL).unwrap();
    assert!(config.validate().is_ok());
    config.flags.read_only_from_csmhe = true;
    let error = config.validate().unwrap_err();
    let at = error.location().expect("a location");
    assert_eq!((at.line, at.key.as_deref()), (None, Some("flags.READ_ONLY_FROM_CSMHE")));
    assert!(error.to_string().starts_with("key `flags.READ_ONLY_FROM_CSMHE`: "));
}

#[test]
fn the_report_shows_two_servers_without_secrets() {
    let text = two_servers_with("user = \"csmh\"\npassword = \"hunter2\"\n");
    let text =
        format!("{text}[flags]\nENABLE_CSMH_EXTENDED = true\nENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES = true\n");
    let report = report(&Config::parse(&text).unwrap());
    assert!(report.contains("topology:        two servers"), "{report}");
    assert!(
        report.contains("edxapp:        127.0.0.1:3306")
            && report.contains("csmh-db:3306 (user csmh, password in the file; tls preferred)"),
        "{report}"
    );
    assert!(!report.contains("hunter2"), "{report}");
    assert!(report.contains("SELECT          -> fan out to both tables, merged"), "{report}");
    assert!(report.contains("ENABLE_CSMH_EXTENDED = true"), "{report}");
}

#[test]
fn an_unreadable_file_names_the_path() {
    let error = Config::load(Path::new("does-not-exist/proxy.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.to_string().contains("does-not-exist/proxy.toml"));
}

/// `text` must be refused with a message naming `line` and never showing `secret`.
fn assert_refused_without(text: &str, line: usize, secret: &str) {
    let message = refused(text).to_string();
    assert!(message.contains(&format!("line {line}")), "no line {line} in: {message}");
    assert!(!message.contains(secret), "the secret is shown: {message}");
}

#[test]
fn no_message_about_the_file_shows_a_password() {
    let secret = "s3cret-Pa55";
    let on_line_10 = |value: &str| two_servers_with(&format!("user = \"edxapp001\"\npassword = {value}\n"));
    assert_refused_without(&on_line_10(&format!("\"{secret}")), 10, secret);
    assert_refused_without(&on_line_10(secret), 10, secret);
    assert_refused_without(&on_line_10(&format!("'{secret}' extra")), 10, secret);
    assert_refused_without(&on_line_10("123456789"), 10, "123456789");
    let misspelled = two_servers_with(&format!("user = \"edxapp001\"\npasword = \"{secret}\n"));
    assert_refused_without(&misspelled, 10, secret);
    let inline = format!("{MINIMAL}\n[admin]\naddress = \"x\"\nbad = {{ password = \"{secret}\", = }}\n");
    assert_refused_without(&inline, 12, secret);
    let invalid = refused(&two_servers_with(&format!("password = \"{secret}\"\n"))).to_string();
    assert!(invalid.contains("backends.csmh.user") && !invalid.contains(secret), "{invalid}");
}

/// `text` must be refused with a message naming `line` and showing none of `forms` (a secret as written and as
/// toml reads it).
fn assert_refused_without_any(text: &str, line: usize, forms: &[&str]) {
    for form in forms {
        assert_refused_without(text, line, form);
    }
}

#[test]
fn no_message_shows_a_password_of_another_type_or_under_a_key_written_otherwise() {
    // Checked: before, toml's complaint named the number as it read it (`invalid type: integer `1234567``), the
    // line of a syntax error after an array was quoted from the array's second element on, and a key with
    // escapes was not known for a password.
    let on_line_10 = |value: &str| two_servers_with(&format!("user = \"edxapp001\"\npassword = {value}\n"));
    assert_refused_without_any(&on_line_10("1_234_567"), 10, &["1_234_567", "1234567"]);
    assert_refused_without_any(&on_line_10("0xDEADBEEF"), 10, &["DEADBEEF", "3735928559"]);
    assert_refused_without_any(&on_line_10("6.02e23"), 10, &["6.02e23", "602000000000000000000000"]);
    assert_refused_without_any(&on_line_10("true"), 10, &["true"]);
    assert_refused_without_any(&on_line_10("1979-05-27T07:32:00"), 10, &["1979", "07:32"]);
    assert_refused_without_any(&on_line_10("[\"aa-1\", \"hunter2\"] x"), 10, &["aa-1", "hunter2"]);
    assert_refused_without_any(&on_line_10("[\"aa-1\", \"hunter2\"]"), 10, &["aa-1", "hunter2"]);
    assert_refused_without_any(&on_line_10("{ a = \"hunter2\" }"), 10, &["hunter2"]);
    assert_refused_without_any(&on_line_10("[\n  \"aa-1\",\n  \"hunter2\" x\n]"), 12, &["aa-1", "hunter2"]);
    let escaped_key = two_servers_with("user = \"edxapp001\"\n\"p\\u0061ssword\" = \"hunter2\" x\n");
    assert_refused_without(&escaped_key, 10, "hunter2");
    let escaped_key = two_servers_with("user = \"edxapp001\"\n\"p\\u0061ssword\" = 1_234_567\n");
    assert_refused_without_any(&escaped_key, 10, &["1_234_567", "1234567"]);
    let dotted = format!("{MINIMAL}backends.csmh.\"password\" = \"hunter2\" x\n");
    assert_refused_without(&dotted, MINIMAL.lines().count() + 1, "hunter2");
    let escaped_value = on_line_10("\"hunt\\u0065r2\" x");
    assert_refused_without_any(&escaped_value, 10, &["hunter2", "hunt\\u0065r2"]);
}
