"""edxapp's saves of a problem's state through csmh-proxy, to see what Django does with history ids around 2^31.

Usage: django_boundary.py --proxy HOST:PORT --user U --password P --edxapp-db DB
                          [--history-id auto|BigAutoField|UnsignedBigIntAutoField] COMMAND ...

  request --module N --state S [--state S ...]
      One LMS request (one transaction, the request cache empty at its start) that saves module N's state once per
      --state, in order, as edxapp does when a learner submits an answer: each save writes the module and then its
      history (edx_courseware/models.py, edx-platform's `save_history_entry`).
  migrate
      What an operator's deployment runs: `migrate` with edxapp's earlier migrations already applied (here
      0001_initial, recorded without running it, as the fixture made the tables), then `makemigrations --check`,
      which says whether the migrations describe the models as they are declared.

Django's `default` database is the proxy, as in django_orm.py. --history-id declares the history model's `id` as
the named field; `auto` (the default) leaves it as edx-platform has it, a 32-bit AutoField.

Prints one JSON object on standard output: the Django version, the history model's id field, `statements` (every
statement Django sent to the database, in order, with its values), and for `request` the ids of the history rows it
added, for `migrate` the commands' output and whether `makemigrations --check` found the models and migrations in
agreement. Django's and edxapp's log lines go to standard error as `LEVEL [logger] message`.
"""

import argparse
import io
import json
import logging
import sys

from django_orm import configure_django, statement_text

HISTORY_ID_FIELDS = ["auto", "BigAutoField", "UnsignedBigIntAutoField"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--edxapp-db", required=True)
    parser.add_argument("--history-id", default="auto", choices=HISTORY_ID_FIELDS)
    commands = parser.add_subparsers(dest="command", required=True)
    request = commands.add_parser("request", help="one request saving a module's state once per --state")
    request.add_argument("--module", required=True, type=int)
    request.add_argument("--state", required=True, action="append")
    commands.add_parser("migrate", help="migrate as a deployment does, then makemigrations --check")
    return parser.parse_args()


def request(args):
    """Saves the module's states in one request; returns the ids of the history rows the saves added."""
    from django.db import transaction
    from edx_courseware.models import WRITTEN, StudentModule, begin_request

    begin_request()
    with transaction.atomic():
        module = StudentModule.objects.get(id=args.module)
        for attempt, state in enumerate(args.state):
            module.state = state
            module.grade = float(attempt)
            module.save()
    return {"written": list(WRITTEN)}


def migrate(_args):
    """Records edxapp's earlier migrations as applied, applies the rest, then checks the models against them."""
    from django.core.management import call_command

    output = io.StringIO()
    call_command("migrate", "courseware", "0001", fake=True, stdout=output, no_color=True)
    call_command("migrate", "courseware", stdout=output, no_color=True)
    check = io.StringIO()
    try:
        call_command("makemigrations", "courseware", check=True, dry_run=True, stdout=check, no_color=True)
        agree = True
    except SystemExit:
        agree = False
    return {"migrate_output": output.getvalue(), "makemigrations_output": check.getvalue(), "agree": agree}


COMMANDS = {"request": request, "migrate": migrate}


def main():
    args = parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s [%(name)s] %(message)s")
    extra = {} if args.history_id == "auto" else {"HISTORY_ID_FIELD": args.history_id}
    configure_django(args, **extra)

    import django
    from django.db import connection
    from edx_courseware.models import StudentModuleHistory

    statements = []

    def record(execute, sql, params, many, context):
        statements.append(statement_text(sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        result = COMMANDS[args.command](args)
    report = {
        "django": django.get_version(),
        "history_id_field": type(StudentModuleHistory._meta.pk).__name__,
        "statements": statements,
        **result,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
