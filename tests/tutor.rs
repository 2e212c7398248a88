//! The Tutor plugin (`tutor-contrib-csmh-proxy/`) in a real Tutor from PyPI: what `tutor config save` renders
//! (the compose files, edxapp's settings, the Kubernetes manifests, `proxy.toml`), what `tutor csmh-proxy flags
//! set` changes, what `tutor local do ...` runs, and the rendered init task with `csmh-proxy init` against a
//! MariaDB laid out as Tutor lays out its MySQL, with edxapp's statements then routed through the proxy.
//!
//! Tutor and kubernetes-validate are installed once in a virtual environment under the target directory; the
//! plugin is installed from the repository on every run, into a directory of the run's own.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use csmh_proxy::config::Config;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use serde_json::Value;
use support::packages::{Venv, assert_succeeded};
use support::{Account, root_conn};

/// Tutor 22 (Verawood), kubernetes-validate (its schemas ship with it: no network at validation), and
/// setuptools to build the plugin without fetching it.
const TUTOR: Venv<'static> = Venv {
    name: "tutor-venv",
    requirements: &["tutor==22.0.3", "kubernetes-validate==1.37.0", "setuptools==80.9.0"],
    check: "import tutor, kubernetes_validate, setuptools, yaml",
    build_packages: &[],
};

/// Tutor 21 (Ulmo), the previous major, which the plugin supports too.
const TUTOR_21: Venv<'static> =
    Venv { name: "tutor21-venv", requirements: &["tutor==21.0.9"], check: "import tutor, yaml", build_packages: &[] };

/// edxapp's database password in every rendered configuration.
const OPENEDX_PASSWORD: &str = "openedx-password";

/// The directory the plugin is installed in (`pip install --target`), once per test binary.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // pip builds in the source tree: build a copy, so that the tests write nothing into the repository.
        let plugin = dir.path().join("source");
        copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tutor-contrib-csmh-proxy"), &plugin);
        let pip = Command::new(TUTOR.python())
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"])
            .args(["--no-deps", "--no-build-isolation", "--target"])
            .arg(dir.path().join("site"))
            .arg(&plugin)
            .output()
            .expect("pip runs");
        assert_succeeded(&pip, "pip install ./tutor-contrib-csmh-proxy");
        let site = dir.path().join("site");
        (dir, site)
    })
    .1
}

/// Copies the files of `from` to `to`, leaving out what a build left there.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "build" || name.ends_with(".egg-info") || name == "__pycache__" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// A Tutor project root of the test's own, with the plugin enabled and the environment rendered.
struct Tutor {
    /// The virtual environment with this Tutor.
    venv: &'static Venv<'static>,
    /// `TUTOR_ROOT`: `config.yml` and the rendered `env/`.
    root: tempfile::TempDir,
    /// A `docker` that records its arguments instead of running anything (see [`Tutor::docker_runs`]).
    fake_bin: tempfile::TempDir,
}

impl Tutor {
    /// Enables the plugin and runs `tutor config save` with `settings` (`KEY=VALUE`, as `--set` takes them).
    fn new(settings: &[&str]) -> Tutor {
        Tutor::of(&TUTOR, settings)
    }

    /// The same as [`Tutor::new`] with the Tutor of `venv`.
    fn of(venv: &'static Venv<'static>, settings: &[&str]) -> Tutor {
        let tutor =
            Tutor { venv, root: tempfile::tempdir().expect("a root"), fake_bin: tempfile::tempdir().expect("a dir") };
        let docker = "#!/bin/sh\ncase \"$*\" in *' ls --format json'*) echo '[]'; exit 0;; esac\n\
                      n=$(ls \"$FAKE_DOCKER_RUNS\" | wc -l); printf '%s\\0' \"$@\" > \"$FAKE_DOCKER_RUNS/$n\"\n";
        let path = tutor.fake_bin.path().join("docker");
        std::fs::write(&path, docker).expect("the fake docker is written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("it can run");
        std::fs::create_dir(tutor.runs_dir()).unwrap();
        tutor.run(&["plugins", "enable", "csmh-proxy"]);
        let mut save = vec!["config", "save", "--set", "OPENEDX_MYSQL_PASSWORD=openedx-password"];
        for setting in settings {
            save.extend(["--set", setting]);
        }
        tutor.run(&save);
        tutor
    }

    fn runs_dir(&self) -> PathBuf {
        self.fake_bin.path().join("runs")
    }

    /// `tutor ARGS` in this project root, with the plugin and the fake `docker`.
    fn command(&self, args: &[&str]) -> Command {
        let path = format!("{}:{}", self.fake_bin.path().display(), std::env::var("PATH").unwrap_or_default());
        let mut command = Command::new(self.venv.python().with_file_name("tutor"));
        command
            .args(args)
            .env("TUTOR_ROOT", self.root.path())
            .env("TUTOR_PLUGINS_ROOT", self.root.path().join("plugins"))
            .env("PYTHONPATH", plugin_dir())
            .env("PATH", path)
            .env("FAKE_DOCKER_RUNS", self.runs_dir());
        command
    }

    /// Runs `tutor ARGS` and returns its output, which must show success.
    fn run(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().expect("tutor runs");
        assert_succeeded(&output, &format!("tutor {}", args.join(" ")));
        output
    }

    /// The path of a file under the rendered environment.
    fn env(&self, path: &str) -> PathBuf {
        self.root.path().join("env").join(path)
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.env(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The YAML documents of a rendered file, as JSON values (PyYAML parses them).
    fn yaml(&self, path: &str) -> Vec<Value> {
        let code = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
        let output = Command::new(self.venv.python()).args(["-c", code]).arg(self.env(path)).output().unwrap();
        assert_succeeded(&output, &format!("parsing {path}"));
        serde_json::from_slice(&output.stdout).expect("JSON")
    }

    /// The commands `tutor local do ...` ran, each as docker's arguments, oldest first.
    fn docker_runs(&self) -> Vec<Vec<String>> {
        let mut runs: Vec<(usize, Vec<String>)> = std::fs::read_dir(self.runs_dir())
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let n = entry.file_name().to_string_lossy().parse().unwrap();
                let bytes = std::fs::read(entry.path()).unwrap();
                let args = bytes.split(|b| *b == 0).filter(|a| !a.is_empty());
                (n, args.map(|a| String::from_utf8_lossy(a).into_owned()).collect())
            })
            .collect();
        runs.sort();
        runs.into_iter().map(|(_, args)| args).collect()
    }
}

/// The service (or Kubernetes object) named `name` in a list of documents or a compose file.
fn named<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// `csmh-proxy check-config` on `path`, with the passwords the rendered file names in its environment.
fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_csmh-proxy"))
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("CSMH_PROXY_CONFIG")
        .env("EDXAPP_DB_PASSWORD", OPENEDX_PASSWORD)
        .env("CSMH_DB_PASSWORD", "csmh-password")
        .output()
        .expect("the binary runs")
}

/// Where the plugin renders the proxy's configuration, under `env/`.
const PROXY_TOML: &str = "plugins/csmh-proxy/apps/config/proxy.toml";

#[test]
fn compose_runs_the_proxy_and_points_edxapp_at_it() {
    let tutor = Tutor::new(&[]);
    let local = &tutor.yaml("local/docker-compose.yml")[0]["services"];
    let proxy = &local["csmh-proxy"];
    assert_eq!(proxy["image"], "docker.io/csmh/csmh-proxy:0.1.0", "{proxy}");
    assert_eq!(proxy["depends_on"], serde_json::json!(["mysql"]));
    assert_eq!(proxy["environment"]["CSMH_PROXY_CONFIG"], "/etc/csmh-proxy/proxy.toml");
    assert_eq!(proxy["volumes"][0], "../plugins/csmh-proxy/apps/config:/etc/csmh-proxy:ro", "a directory mount");
    assert_eq!(proxy["healthcheck"]["test"], serde_json::json!(["CMD", "csmh-proxy", "healthcheck"]));
    assert_eq!(proxy["stop_grace_period"], "20s", "drain 5 s + shutdown 10 s + 5 s");
    assert_eq!(proxy["networks"]["default"]["aliases"], serde_json::json!(["csmh-proxy-admin"]), "for fleet --dns");
    for service in ["lms", "cms"] {
        let depends = local[service]["depends_on"].as_array().unwrap();
        assert!(depends.contains(&"csmh-proxy".into()), "{service}: {depends:?}");
    }
    let jobs = &tutor.yaml("local/docker-compose.jobs.yml")[0]["services"];
    assert_eq!(jobs["csmh-proxy-job"]["image"], "docker.io/csmh/csmh-proxy:0.1.0-jobs", "an image with a shell");
    assert_eq!(jobs["csmh-proxy-job"]["entrypoint"], serde_json::json!([]), "Tutor runs tasks with sh -e -c");
    let dev = &tutor.yaml("dev/docker-compose.yml")[0]["services"];
    assert_eq!(dev["csmh-proxy"]["ports"], serde_json::json!(["127.0.0.1:6080:6080"]));

    // LMS, CMS and their workers (the same settings modules), in production and development; the server's
    // address stays in Tutor's configuration for everything else.
    for settings in ["lms/production.py", "lms/development.py", "cms/production.py", "cms/development.py"] {
        let text = tutor.read(&format!("apps/openedx/settings/{settings}"));
        for line in ["DATABASES[\"default\"][\"HOST\"] = \"csmh-proxy\"", "DATABASES[\"default\"][\"PORT\"] = 3306"] {
            assert!(text.contains(line), "no `{line}` in {settings}");
        }
    }
    let lms_yml = tutor.read("apps/openedx/config/lms.env.yml");
    assert!(lms_yml.contains("HOST: \"mysql\""), "MYSQL_HOST is not overridden:\n{lms_yml}");
}

#[test]
fn tutor_21_renders_the_same() {
    let (current, previous) = (Tutor::new(&[]), Tutor::of(&TUTOR_21, &[]));
    for path in [PROXY_TOML, "plugins/csmh-proxy/k8s/migrate-job.yml"] {
        assert_eq!(current.read(path), previous.read(path), "{path}");
    }
    let services = &previous.yaml("local/docker-compose.yml")[0]["services"];
    assert!(services["lms"]["depends_on"].as_array().unwrap().contains(&"csmh-proxy".into()));
    assert!(previous.read("apps/openedx/settings/lms/production.py").contains("= \"csmh-proxy\""));
    assert_succeeded(&check_config(&previous.env(PROXY_TOML)), "check-config on Tutor 21's rendering");
}

#[test]
fn kubernetes_manifests_validate() {
    let tutor =
        Tutor::new(&["CSMH_PROXY_LISTEN_TLS_SELF_SIGNED=false", "CSMH_PROXY_MIGRATE_ARGS=--max-rows-per-second 5000"]);
    let manifests =
        ["k8s/deployments.yml", "k8s/services.yml", "k8s/jobs.yml", "plugins/csmh-proxy/k8s/migrate-job.yml"];
    kubernetes_validate(&manifests.map(|path| tutor.env(path)));

    let deployments = tutor.yaml("k8s/deployments.yml");
    let pod = &named(&deployments, "Deployment", "csmh-proxy")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > 5 + 10, "the grace period {grace} s must exceed drain_secs + shutdown_timeout_secs");
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"], serde_json::json!({"path": "/readyz", "port": "admin"}));
    assert_eq!(container["livenessProbe"]["httpGet"], serde_json::json!({"path": "/livez", "port": "admin"}));
    assert!(container["resources"]["limits"]["memory"].is_string(), "{container}");
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|mount| mount.get("subPath").is_none()), "{mounts:?}");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "csmh-proxy-config");
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "csmh-proxy-tls");

    // The MySQL passwords come from a Secret, never as plain values in the pods' manifests (they were before).
    for manifest in ["k8s/deployments.yml", "k8s/jobs.yml", "plugins/csmh-proxy/k8s/migrate-job.yml"] {
        let text = std::fs::read_to_string(tutor.env(manifest)).unwrap();
        assert!(!text.contains(OPENEDX_PASSWORD), "{manifest} holds the password");
    }
    let password_env = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "EDXAPP_DB_PASSWORD");
    let reference = &password_env.expect("EDXAPP_DB_PASSWORD")["valueFrom"]["secretKeyRef"];
    assert_eq!(reference, &serde_json::json!({"name": "csmh-proxy-passwords", "key": "edxapp"}));

    let services = tutor.yaml("k8s/services.yml");
    let secret = named(&services, "Secret", "csmh-proxy-passwords");
    assert_eq!(secret["stringData"]["edxapp"], OPENEDX_PASSWORD);
    assert!(secret["stringData"]["csmh"].is_string(), "{secret}");
    assert_eq!(named(&services, "Service", "csmh-proxy")["spec"]["ports"][0]["port"], 3306);
    assert_eq!(named(&services, "Service", "csmh-proxy-admin")["spec"]["clusterIP"], "None");
    named(&tutor.yaml("k8s/jobs.yml"), "Job", "csmh-proxy-job");

    let migrate = &tutor.yaml("plugins/csmh-proxy/k8s/migrate-job.yml")[0];
    let args = &migrate["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args, &serde_json::json!(["migrate", "--max-rows-per-second", "5000"]));
    assert!(migrate["metadata"]["labels"].get("app.kubernetes.io/managed-by").is_none(), "Tutor would wait on it");

    let kustomization = &tutor.yaml("kustomization.yml")[0];
    let generators = kustomization["configMapGenerator"].as_array().unwrap();
    let config = generators.iter().find(|g| g["name"] == "csmh-proxy-config").expect("the proxy's ConfigMap");
    assert_eq!(config["options"]["disableNameSuffixHash"], true, "flag flips must not roll the pods");
    for file in config["files"].as_array().unwrap() {
        assert!(tutor.env(file.as_str().unwrap()).exists(), "{file} is rendered");
    }

    // A changed password changes the pod template, which rolls the pods (their environment reads the Secret only
    // when they start); the same configuration saved again does not (before, the template never changed).
    let fingerprint = |tutor: &Tutor| {
        let deployments = tutor.yaml("k8s/deployments.yml");
        let template = &named(&deployments, "Deployment", "csmh-proxy")["spec"]["template"];
        template["metadata"]["annotations"]["csmh-proxy/passwords"].as_str().expect("the annotation").to_owned()
    };
    let before = fingerprint(&tutor);
    assert!(before.len() == 64 && before.bytes().all(|b| b.is_ascii_hexdigit()), "{before}");
    tutor.run(&["config", "save"]);
    assert_eq!(fingerprint(&tutor), before, "nothing changed");
    tutor.run(&["config", "save", "--set", "OPENEDX_MYSQL_PASSWORD=rotated-password"]);
    let after = fingerprint(&tutor);
    assert_ne!(after, before, "the password changed");
    assert!(!tutor.read("k8s/deployments.yml").contains("rotated-password"));
}

#[test]
fn the_rendered_proxy_toml_passes_check_config() {
    let tutor = Tutor::new(&[]);
    let output = check_config(&tutor.env(PROXY_TOML));
    assert_succeeded(&output, "check-config on the default rendering");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "topology:        one server, mysql:3306",
        "old table:       openedx.courseware_studentmodulehistory",
        // edxapp's libmysqlclient encrypts when TLS is offered, which MySQL 8.4's full logins need.
        "tls:           offered, self-signed",
    ] {
        assert!(stdout.contains(expected), "no `{expected}` in:\n{stdout}");
    }
    let deployments = tutor.yaml("k8s/deployments.yml");
    let pod = &named(&deployments, "Deployment", "csmh-proxy")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"].as_array().unwrap().len(), 1, "a self-signed certificate needs no Secret: {pod}");

    let separate = Tutor::new(&[
        "CSMH_PROXY_CSMH_HOST=csmh-mysql",
        "CSMH_PROXY_BACKEND_TLS_MODE=required",
        "CSMH_PROXY_ENABLE_CSMH_EXTENDED=true",
        "CSMH_PROXY_ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES=true",
        "CSMH_PROXY_CSMH_KEEP_IDLE=2",
    ]);
    assert!(separate.read(PROXY_TOML).contains("\nkeep_idle = 2\n"), "{}", separate.read(PROXY_TOML));
    let output = check_config(&separate.env(PROXY_TOML));
    assert_succeeded(&output, "check-config with a separate csmh server");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("csmh-mysql:3306"), "{stdout}");
    assert!(stdout.contains("ENABLE_CSMH_EXTENDED = true"), "{stdout}");
}

#[test]
fn a_truncated_proxy_toml_is_refused() {
    // Tutor writes rendered files in place: whatever prefix a watching proxy reads must be refused, never
    // taken for a configuration with fewer flags on.
    let tutor = Tutor::new(&["CSMH_PROXY_ENABLE_CSMH_EXTENDED=true"]);
    // In-process, the password's variable is not set: write the password itself, at the same place.
    let text = tutor.read(PROXY_TOML).replace("password_env = \"EDXAPP_DB_PASSWORD\"", "password = \"x\"");
    assert!(Config::parse(&text).is_ok(), "the whole file loads");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let full = text.trim_end().len();
    for cut in (0..full).filter(|cut| text.is_char_boundary(*cut)) {
        std::fs::write(&path, &text[..cut]).unwrap();
        if Config::load(&path).is_ok() {
            panic!("a file cut after {cut} bytes loads:\n{}", &text[..cut]);
        }
    }
}

#[test]
fn flags_set_changes_only_the_proxys_configuration() {
    let tutor = Tutor::new(&[]);
    let before = rendered_files(&tutor.env(""));
    tutor.run(&[
        "csmh-proxy",
        "flags",
        "set",
        "ENABLE_CSMH_EXTENDED=true",
        "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES=true",
    ]);
    let after = rendered_files(&tutor.env(""));
    let changed: Vec<&String> = after.keys().filter(|path| before.get(*path) != after.get(*path)).collect();
    assert_eq!(changed, [PROXY_TOML], "only the proxy's file changes");
    assert_eq!(before.len(), after.len());
    let text = &after[PROXY_TOML];
    assert!(text.contains("ENABLE_CSMH_EXTENDED = true\nENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES = true\n"));
    assert_succeeded(&check_config(&tutor.env(PROXY_TOML)), "check-config after flags set");

    // config.yml keeps them, so the next `tutor config save` renders the same file.
    tutor.run(&["config", "save"]);
    assert_eq!(&rendered_files(&tutor.env(""))[PROXY_TOML], text);

    let show = tutor.run(&["csmh-proxy", "flags", "show"]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("ENABLE_CSMH_EXTENDED=true\n"));
}

#[test]
fn flags_set_refuses_what_the_proxy_would_refuse() {
    let tutor = Tutor::new(&[]);
    for args in [["READ_ONLY_FROM_CSMHE=true"], ["ENABLE_CSMH_EXTENDED=yes"], ["NO_SUCH_FLAG=true"]] {
        let output = tutor.command(&[&["csmh-proxy", "flags", "set"][..], &args].concat()).output().unwrap();
        assert!(!output.status.success(), "{args:?} accepted");
    }
    assert!(tutor.read(PROXY_TOML).contains("READ_ONLY_FROM_CSMHE = false"));
}

#[test]
fn do_jobs_run_the_proxys_commands_in_the_job_container() {
    let tutor = Tutor::new(&[]);
    tutor.run(&["local", "do", "csmh-status", "--exact"]);
    tutor.run(&["local", "do", "csmh-verify", "--chunk-size", "1000"]);
    tutor.run(&["local", "do", "csmh-pause", "--reason", "exam week"]);
    tutor.run(&["local", "do", "csmh-throttle", "--max-load", "Threads_running=40"]);
    tutor.run(&["local", "do", "csmh-resume"]);
    tutor.run(&["local", "do", "csmh-fleet"]);
    tutor.run(&["local", "do", "csmh-truncate-old", "--yes", "--slow"]);
    let scripts: Vec<String> = tutor.docker_runs().iter().map(|run| task_of(run, "csmh-proxy-job")).collect();
    assert_eq!(
        scripts,
        [
            "csmh-proxy status --exact",
            "csmh-proxy verify --chunk-size 1000",
            "csmh-proxy pause --reason 'exam week'",
            "csmh-proxy throttle --max-load Threads_running=40",
            "csmh-proxy resume",
            // Every proxy, found by the name the compose service and the headless Service both answer to.
            "csmh-proxy fleet --dns 'csmh-proxy-admin:6080'",
            "csmh-proxy truncate-old --dns 'csmh-proxy-admin:6080' --yes --slow"
        ]
    );

    // The README's copy with docker compose: the proxy's service, whose entrypoint is the binary.
    tutor.run(&["local", "run", "csmh-proxy", "migrate", "--max-rows-per-second", "100"]);
    let runs = tutor.docker_runs();
    let run = runs.last().expect("the run");
    assert!(run.ends_with(&["csmh-proxy", "migrate", "--max-rows-per-second", "100"].map(String::from)), "{run:?}");
    let service = &tutor.yaml("local/docker-compose.yml")[0]["services"]["csmh-proxy"];
    assert_eq!(service["entrypoint"], serde_json::json!(["csmh-proxy"]));
}

/// The script of a `docker compose ... run ... <service> sh -e -c SCRIPT` run.
fn task_of(run: &[String], service: &str) -> String {
    let at = run.iter().position(|arg| arg == service).unwrap_or_else(|| panic!("no {service} in {run:?}"));
    assert_eq!(run[at + 1..at + 4], ["sh", "-e", "-c"], "{run:?}");
    run[at + 4].clone()
}

/// Every file under `dir`, by path relative to it, with its content.
fn rendered_files(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.insert(relative, String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned());
            }
        }
    }
    files
}

/// A MySQL administrator account as a managed server has one (the fixture's root has no password, which
/// Tutor's `--set` cannot express).
const ADMIN: (&str, &str) = ("tutor_admin", "admin-password");

/// The password of the plugin's account on a separate `csmh` server.
const CSMH_PASSWORD: &str = "csmh-password";

#[test]
fn the_init_task_and_the_proxy_on_a_server_laid_out_as_tutors() {
    init_and_route(false);
}

#[test]
fn the_init_task_and_the_proxy_with_a_separate_csmh_server() {
    init_and_route(true);
}

/// Lays a MariaDB out as Tutor's MySQL (and, with `separate_csmh`, starts a second, empty one for the extended
/// table), runs the plugin's init task as `tutor local do init` would, flips the first flags with `tutor
/// csmh-proxy flags set`, and sends edxapp's history statements through a proxy with the rendered `proxy.toml`.
fn init_and_route(separate_csmh: bool) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let server = runtime.block_on(support::private_server());
    let csmh = if separate_csmh { runtime.block_on(support::private_server()) } else { server.clone() };
    let old_max: u64 = runtime.block_on(async {
        // As Tutor's jobs/init/mysql.sh leaves it: database openedx, user openedx granted openedx.* only; then
        // edx-platform's tables with some history.
        let mut root = root_conn(&server).await;
        for sql in [
            "CREATE DATABASE openedx".to_owned(),
            format!("CREATE USER 'openedx'@'%' IDENTIFIED BY '{OPENEDX_PASSWORD}'"),
            "GRANT ALL ON openedx.* TO 'openedx'@'%'".to_owned(),
        ] {
            root.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        for server in [&server, &csmh] {
            let mut root = root_conn(server).await;
            root.query_drop(format!("CREATE USER IF NOT EXISTS '{}'@'%' IDENTIFIED BY '{}'", ADMIN.0, ADMIN.1))
                .await
                .expect("the administrator");
            root.query_drop(format!("GRANT ALL ON *.* TO '{}'@'%' WITH GRANT OPTION", ADMIN.0)).await.unwrap();
        }
        csmh_proxy::sandbox::create_edxapp_tables(&mut root, "openedx").await.expect("edxapp's tables");
        csmh_proxy::sandbox::insert_sample_history(&mut root, "openedx").await.expect("history");
        root.query_first("SELECT MAX(id) FROM openedx.courseware_studentmodulehistory").await.unwrap().unwrap()
    });

    let (addr, csmh_addr) = (server.addr(), csmh.addr());
    let mut settings = vec![
        format!("MYSQL_HOST={}", addr.ip()),
        format!("MYSQL_PORT={}", addr.port()),
        format!("MYSQL_ROOT_USERNAME={}", ADMIN.0),
        format!("MYSQL_ROOT_PASSWORD={}", ADMIN.1),
        "CSMH_PROXY_PORT=0".to_owned(),
        "CSMH_PROXY_ADMIN_PORT=0".to_owned(),
    ];
    if separate_csmh {
        settings.extend([
            format!("CSMH_PROXY_CSMH_HOST={}", csmh_addr.ip()),
            format!("CSMH_PROXY_CSMH_PORT={}", csmh_addr.port()),
            format!("CSMH_PROXY_CSMH_PASSWORD={CSMH_PASSWORD}"),
        ]);
    }
    let tutor = Tutor::new(&settings.iter().map(String::as_str).collect::<Vec<_>>());

    // What `tutor local do init --limit csmh-proxy` runs, run here (twice: it changes nothing the second time):
    // the SQL with the mysql client of the mysql-job container, then `csmh-proxy init` with the environment of
    // the csmh-proxy-job container.
    tutor.run(&["local", "do", "init", "--limit", "csmh-proxy"]);
    let runs = tutor.docker_runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let bin = tempfile::tempdir().unwrap();
    let client = &csmh_proxy::sandbox::mariadb_binaries().expect("MariaDB's client").client;
    std::os::unix::fs::symlink(client, bin.path().join("mysql")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_csmh-proxy"), bin.path().join("csmh-proxy")).unwrap();
    let job = &tutor.yaml("local/docker-compose.jobs.yml")[0]["services"]["csmh-proxy-job"]["environment"];
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    for (run, service) in [&runs, &runs].into_iter().flatten().zip(["mysql-job", "csmh-proxy-job"].iter().cycle()) {
        let mut task = Command::new("sh");
        task.args(["-e", "-c", &task_of(run, service)]).env("PATH", &path);
        for (name, value) in job.as_object().unwrap() {
            task.env(name, value.as_str().unwrap());
        }
        let output = task.env("CSMH_PROXY_CONFIG", tutor.env(PROXY_TOML)).output().unwrap();
        assert_succeeded(&output, &format!("the init task in {service}"));
    }

    tutor.run(&[
        "csmh-proxy",
        "flags",
        "set",
        "ENABLE_CSMH_EXTENDED=true",
        "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES=true",
    ]);
    // In-process, the passwords' variables are not set: write the passwords themselves.
    let text = tutor
        .read(PROXY_TOML)
        .replace("password_env = \"EDXAPP_DB_PASSWORD\"", &format!("password = \"{OPENEDX_PASSWORD}\""))
        .replace("password_env = \"CSMH_DB_PASSWORD\"", &format!("password = \"{CSMH_PASSWORD}\""));
    let config = Config::parse(&text).expect("the rendered proxy.toml");
    runtime.block_on(async {
        let mut csmh_root = root_conn(&csmh).await;
        // The same account on both servers: CSMH_PROXY_CSMH_USER defaults to OPENEDX_MYSQL_USERNAME.
        let grants: Vec<String> = csmh_root.query("SHOW GRANTS FOR 'openedx'@'%'").await.unwrap();
        assert!(grants.iter().any(|grant| grant.contains("ON `edxapp_csmh`.*")), "{grants:?}");
        let next: u64 = csmh_root
            .query_first(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edxapp_csmh' \
                 AND TABLE_NAME = 'coursewarehistoryextended_studentmodulehistoryextended'",
            )
            .await
            .unwrap()
            .expect("the extended table");
        assert!(next > old_max + 10000 - 1, "next id {next}, old ids up to {old_max}");

        // edxapp, logged in as openedx to database openedx through the proxy, as its settings now say.
        let proxy = support::start_proxy(config).await;
        let port = proxy.addr().port();
        let openedx = Account::native("openedx", OPENEDX_PASSWORD);
        let mut edxapp = Conn::new(openedx.opts(([127, 0, 0, 1], port).into(), Some("openedx"))).await.unwrap();
        let module: u64 = edxapp
            .query_first("SELECT MIN(student_module_id) FROM courseware_studentmodulehistory")
            .await
            .unwrap()
            .unwrap();
        edxapp
            .query_drop(format!(
                "INSERT INTO `courseware_studentmodulehistory` (`version`, `created`, `state`, `grade`, \
                 `max_grade`, `student_module_id`) VALUES (NULL, '2026-01-01 12:00:00.000000', '{{}}', 1.0, 2.0, {module})"
            ))
            .await
            .expect("the history insert");
        let new_id = edxapp.last_insert_id().expect("an id");
        assert!(new_id >= next, "the new row {new_id} is in the extended table");
        let ids: Vec<Row> = edxapp
            .query(format!(
                "SELECT `courseware_studentmodulehistory`.`id` FROM `courseware_studentmodulehistory` WHERE \
                 `courseware_studentmodulehistory`.`student_module_id` IN ({module}) ORDER BY \
                 `courseware_studentmodulehistory`.`id` DESC"
            ))
            .await
            .expect("the history read");
        let ids: Vec<u64> = ids.into_iter().map(|row| row.get(0).unwrap()).collect();
        assert_eq!(ids[0], new_id, "newest first, across both tables: {ids:?}");
        assert!(ids.len() > 1 && ids[1..].iter().all(|id| *id <= old_max), "{ids:?}");
        let extended: u64 = csmh_root
            .query_first(format!(
                "SELECT COUNT(*) FROM edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended WHERE id = {new_id}"
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(extended, 1);
        drop(edxapp);
        proxy.shutdown().await.expect("the proxy stops");
    });
}

#[test]
fn the_kubernetes_manifests_without_tutor_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let manifests = ["deployment.yaml", "service.yaml", "service-admin.yaml", "migrate-job.yaml"];
    kubernetes_validate(&manifests.map(|file| dir.join(file)));
}

/// Validates `manifests` with `kubernetes-validate --strict` against the newest schemas it has and those of a
/// cluster a few years old.
fn kubernetes_validate(manifests: &[PathBuf]) {
    for version in ["1.37.0", "1.28.0"] {
        let validate = Command::new(TUTOR.python().with_file_name("kubernetes-validate"))
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .args(manifests)
            .output()
            .expect("kubernetes-validate runs");
        assert_succeeded(&validate, &format!("kubernetes-validate --strict for Kubernetes {version}"));
    }
}
