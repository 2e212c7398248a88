"""Tutor plugin for csmh-proxy: edxapp's MySQL connections go through the proxy, which moves
courseware_studentmodulehistory to its extended table as the flags say.

What it adds: settings (CSMH_PROXY_*), the proxy's rendered proxy.toml, a compose service and a Kubernetes
Deployment with their Services, the patches that point LMS, CMS and their workers at the proxy, an init task,
`tutor local|dev|k8s do csmh-status|csmh-verify|csmh-pause|csmh-resume|csmh-throttle|csmh-fleet|csmh-truncate-old`, and `tutor csmh-proxy flags set|show`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shlex
import typing as t
from pathlib import Path

import click
from tutor import config as tutor_config
from tutor import env as tutor_env
from tutor import fmt, hooks

from . import __version__

HERE = Path(__file__).parent

# edx-platform's migration flags, in the order they are turned on; settings CSMH_PROXY_<flag>.
FLAGS = ("ENABLE_CSMH_EXTENDED", "ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES", "READ_ONLY_FROM_CSMHE")

# The proxy's configuration, as a template name and as a path under the environment.
PROXY_TOML = ("csmh-proxy", "apps", "config", "proxy.toml")

hooks.Filters.CONFIG_DEFAULTS.add_items(
    [
        ("CSMH_PROXY_VERSION", __version__),
        ("CSMH_PROXY_DOCKER_IMAGE", "{{ DOCKER_REGISTRY }}csmh/csmh-proxy:{{ CSMH_PROXY_VERSION }}"),
        # Tutor runs every `do` task as `sh -e -c SCRIPT`, and the proxy's image has no shell: the Dockerfile's
        # target tutor-jobs adds busybox's.
        ("CSMH_PROXY_JOB_DOCKER_IMAGE", "{{ CSMH_PROXY_DOCKER_IMAGE }}-jobs"),
        # Where edxapp connects: the compose service and the Kubernetes Service are named after the host.
        ("CSMH_PROXY_HOST", "csmh-proxy"),
        ("CSMH_PROXY_PORT", 3306),
        ("CSMH_PROXY_ADMIN_PORT", 6080),
        # The history tables, as schema.table.
        ("CSMH_PROXY_OLD_TABLE", "{{ OPENEDX_MYSQL_DATABASE }}.courseware_studentmodulehistory"),
        ("CSMH_PROXY_EXTENDED_DATABASE", "edxapp_csmh"),
        (
            "CSMH_PROXY_EXTENDED_TABLE",
            "{{ CSMH_PROXY_EXTENDED_DATABASE }}.coursewarehistoryextended_studentmodulehistoryextended",
        ),
        ("CSMH_PROXY_ID_OFFSET", 10000),
        # The server holding the old table: Tutor's MySQL (or the managed one when RUN_MYSQL is false).
        ("CSMH_PROXY_EDXAPP_HOST", "{{ MYSQL_HOST }}"),
        ("CSMH_PROXY_EDXAPP_PORT", "{{ MYSQL_PORT }}"),
        # A separate server for the extended table; empty: the same server as the old table.
        ("CSMH_PROXY_CSMH_HOST", ""),
        ("CSMH_PROXY_CSMH_PORT", 3306),
        ("CSMH_PROXY_CSMH_USER", "{{ OPENEDX_MYSQL_USERNAME }}"),
        ("CSMH_PROXY_CSMH_PASSWORD", "{{ OPENEDX_MYSQL_PASSWORD }}"),
        # Connections to that separate server kept between edxapp's requests (0 keeps none).
        ("CSMH_PROXY_CSMH_KEEP_IDLE", 8),
        # The account the init task creates the extended database with, on that separate server.
        ("CSMH_PROXY_CSMH_ROOT_USERNAME", "{{ MYSQL_ROOT_USERNAME }}"),
        ("CSMH_PROXY_CSMH_ROOT_PASSWORD", "{{ MYSQL_ROOT_PASSWORD }}"),
        # TLS of the proxy's connections to the servers, as MySQL's --ssl-mode, and the authorities' PEM text.
        ("CSMH_PROXY_BACKEND_TLS_MODE", "preferred"),
        ("CSMH_PROXY_BACKEND_TLS_CA", ""),
        # TLS for edxapp's connections to the proxy, on by default: edxapp's libmysqlclient uses it when offered,
        # and MySQL 8.4's caching_sha2_password sends a full login's password only over TLS. The certificate is one
        # the proxy makes when it starts; with LISTEN_TLS_SELF_SIGNED false, tls.crt and tls.key from the Kubernetes
        # Secret csmh-proxy-tls, or from $(tutor config printroot)/data/csmh-proxy/tls with docker compose.
        ("CSMH_PROXY_LISTEN_TLS", True),
        ("CSMH_PROXY_LISTEN_TLS_SELF_SIGNED", True),
        ("CSMH_PROXY_LISTEN_TLS_REQUIRED", False),
        # After SIGTERM: seconds still serving while unready, then seconds for statements in flight.
        ("CSMH_PROXY_DRAIN_SECS", 5),
        ("CSMH_PROXY_SHUTDOWN_TIMEOUT_SECS", 10),
        # Kubernetes.
        ("CSMH_PROXY_REPLICAS", 2),
        ("CSMH_PROXY_CPU_REQUEST", "100m"),
        ("CSMH_PROXY_MEMORY_REQUEST", "128Mi"),
        ("CSMH_PROXY_MEMORY_LIMIT", "1Gi"),
        # Extra arguments of `csmh-proxy migrate` in the Kubernetes Job, e.g. "--max-rows-per-second 5000".
        ("CSMH_PROXY_MIGRATE_ARGS", ""),
    ]
    + [(f"CSMH_PROXY_{flag}", False) for flag in FLAGS]
)

# The key of the passwords' fingerprint on the proxy's pod template (below), random per installation.
hooks.Filters.CONFIG_UNIQUE.add_items([("CSMH_PROXY_PASSWORDS_FINGERPRINT_KEY", "{{ 32|random_string }}")])


def passwords_fingerprint(key: str, *passwords: str) -> str:
    """An HMAC-SHA256 of the passwords under the installation's key: it changes with any of them, so a password
    changed in the Secret rolls the proxy's pods (whose environment reads it only at start), and reveals none."""
    message = "\0".join(passwords).encode("utf-8")
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()


hooks.Filters.ENV_TEMPLATE_FILTERS.add_item(("csmh_proxy_passwords_fingerprint", passwords_fingerprint))

hooks.Filters.ENV_TEMPLATE_ROOTS.add_item(str(HERE / "templates"))
hooks.Filters.ENV_TEMPLATE_TARGETS.add_items([("csmh-proxy/apps", "plugins"), ("csmh-proxy/k8s", "plugins")])

for patch in sorted((HERE / "patches").iterdir()):
    hooks.Filters.ENV_PATCHES.add_item((patch.name, patch.read_text(encoding="utf-8")))

IMAGES = [("csmh-proxy", "{{ CSMH_PROXY_DOCKER_IMAGE }}"), ("csmh-proxy-jobs", "{{ CSMH_PROXY_JOB_DOCKER_IMAGE }}")]
hooks.Filters.IMAGES_PULL.add_items(IMAGES)
hooks.Filters.IMAGES_PUSH.add_items(IMAGES)

# After Tutor's own tasks (the LMS migrations create the old table, whose ids `init` reads): as MySQL's root,
# the extended database and the grants; then, as edxapp's user, the extended table above the old ids.
hooks.Filters.CLI_DO_INIT_TASKS.add_items(
    [
        ("mysql", (HERE / "templates" / "csmh-proxy" / "tasks" / "init-mysql.sh").read_text(encoding="utf-8")),
        ("csmh-proxy", "csmh-proxy init"),
    ],
    priority=hooks.priorities.LOW,
)


# Every proxy's admin listener: the headless Service on Kubernetes, a network alias of the service with compose.
FLEET = ["--dns", "csmh-proxy-admin:{{ CSMH_PROXY_ADMIN_PORT }}"]


def _proxy_command(subcommand: str, help_text: str, fixed: t.Sequence[str] = ()) -> click.Command:
    """A `do` job that runs `csmh-proxy SUBCOMMAND [FIXED...] [ARGS]...` in the csmh-proxy-job container."""

    @click.command(
        name=f"csmh-{subcommand}",
        help=help_text,
        context_settings={"ignore_unknown_options": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> t.Iterable[tuple[str, str]]:
        yield ("csmh-proxy", shlex.join(["csmh-proxy", subcommand, *fixed, *args]))

    return command


hooks.Filters.CLI_DO_COMMANDS.add_items(
    [
        _proxy_command("status", "Where the migration stands: flags, both tables, offset, last migrate and verify"),
        _proxy_command("verify", "Compare the old table with the extended table; print the ranges that differ"),
        _proxy_command("pause", "Pause the running migrate before its next chunk (--reason TEXT)"),
        _proxy_command("resume", "Let a paused migrate go on"),
        _proxy_command("throttle", "Change the running migrate's throttles (--max-rows-per-second N, --max-load ...)"),
        _proxy_command("fleet", "Whether every running proxy has the same flags", FLEET),
        _proxy_command(
            "truncate-old", "Empty the retired old table once every proxy retired it (plan unless --yes)", FLEET
        ),
    ]
)


@click.group(name="csmh-proxy", help="Manage csmh-proxy")
def csmh_proxy() -> None:
    pass


@csmh_proxy.group(help="edx-platform's history flags, as the proxies apply them")
def flags() -> None:
    pass


@flags.command(name="set", help="Set flags (NAME=true|false ...) and re-render only the proxy's configuration")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=true|false...")
@click.pass_obj
def set_flags(context: t.Any, assignments: tuple[str, ...]) -> None:
    changes = dict(_parse_flag(assignment) for assignment in assignments)
    config = tutor_config.load_minimal(context.root)
    for flag, value in changes.items():
        config[f"CSMH_PROXY_{flag}"] = value
    flags_now = {flag: config.get(f"CSMH_PROXY_{flag}", False) for flag in FLAGS}
    if flags_now["READ_ONLY_FROM_CSMHE"] and not flags_now["ENABLE_CSMH_EXTENDED"]:
        raise click.UsageError("READ_ONLY_FROM_CSMHE=true needs ENABLE_CSMH_EXTENDED=true")
    tutor_config.save_config_file(context.root, config)
    path = render_proxy_toml(context.root, tutor_config.load_full(context.root))
    fmt.echo_info(f"Rendered {path}: running proxies follow it within a second (docker compose).")
    fmt.echo_info(
        "On Kubernetes, apply the ConfigMap (only the proxy's objects: a bare `apply -k` would start Tutor's jobs):\n"
        f"    kubectl apply -k {tutor_env.base_dir(context.root)} --selector app.kubernetes.io/name=csmh-proxy\n"
        "The pods see the new file when the kubelet syncs the volume, within a minute or two."
    )


@flags.command(name="show", help="Print the flags as config.yml sets them")
@click.pass_obj
def show_flags(context: t.Any) -> None:
    config = tutor_config.load_full(context.root)
    for flag in FLAGS:
        click.echo(f"{flag}={str(config[f'CSMH_PROXY_{flag}']).lower()}")


hooks.Filters.CLI_COMMANDS.add_item(csmh_proxy)


def _parse_flag(assignment: str) -> tuple[str, bool]:
    name, _, value = assignment.partition("=")
    if name not in FLAGS:
        raise click.BadParameter(f"{name!r} is not one of {', '.join(FLAGS)}")
    if value.lower() not in ("true", "false"):
        raise click.BadParameter(f"{assignment!r}: the value must be true or false")
    return name, value.lower() == "true"


def render_proxy_toml(root: str, config: t.Any) -> str:
    """Renders proxy.toml into the environment by rename, so a watching proxy never reads half a file."""
    path = tutor_env.pathjoin(root, "plugins", *PROXY_TOML)
    tutor_env.write_to(tutor_env.render_file(config, *PROXY_TOML), path + ".new")
    os.replace(path + ".new", path)
    return path
