"""Drives Django's ORM through csmh-proxy the way edxapp drives it on the student-module history, and checks what
the ORM returns against where the rows really are.

Usage: django_orm.py --proxy HOST:PORT --edxapp HOST:PORT --csmh HOST:PORT --user U --password P
                     --edxapp-db DB --csmh-db DB --extended-table NAME --flags off|both|extended|retired
                     --first-extended-id N [--steps a,b,...] [--skip a,b,...]

Django's `default` database is the proxy (ENGINE django.db.backends.mysql, isolation level READ COMMITTED), with
edx-platform's models (edx_courseware/models.py). Two more connections go directly to the servers of the `edxapp`
and `edxapp_csmh` databases: they are the oracle. From the rows the two tables hold and the flags (the routing
table of docs/routing.md) the script computes what edxapp must see: the old table's rows when the old table is read, the
extended table's rows when it is read, an id in both read once, from the extended table. Every ORM result is
compared with that, row by row, and every write is looked up in the tables directly.

Exit status 0 when every check passed; 1 with a report of each mismatch and the SQL Django sent in that step.
"""

import argparse
import collections
import datetime
import os
import sys
import traceback

import django
from django.conf import settings

COURSE = "course-v1:edX+DemoX+Demo_Course"
# The fixture's sample history (csmh_proxy::sandbox): learners 1-3, modules 1-6, three history rows each.
PROBLEMS = [
    "block-v1:edX+DemoX+Demo_Course+type@problem+block@d1b84dcd39b0423d9e288f27f0f7f242",
    "block-v1:edX+DemoX+Demo_Course+type@problem+block@75f9562c77bc4858b61f907bb810d974",
]
NEW_PROBLEM = "block-v1:edX+DemoX+Demo_Course+type@problem+block@0a1b2c3d4e5f60718293a4b5c6d7e8f9"
VIDEO = "block-v1:edX+DemoX+Demo_Course+type@video+block@5c90cffecd9b48b188cbfea176bf7fe9"
ALICE, BOB = 1, 2
ALICE_PROBLEM_0, ALICE_PROBLEM_1, BOB_PROBLEM_0, BOB_PROBLEM_1 = 1, 2, 3, 4
# A sample row the fixture's copy leaves in the old table only, in every flag row.
NEVER_COPIED = 6

# What each stage of the routing table reads and writes:
# (reads old, reads extended, writes extended, deletes old, deletes extended).
ROUTES = {
    "off": (True, False, False, True, False),
    "both": (True, True, True, True, True),
    "extended": (False, True, True, True, True),
    "retired": (False, True, True, False, True),
}

Row = collections.namedtuple("Row", "id version created state grade max_grade student_module_id")
COLUMNS = "id, version, created, state, grade, max_grade, student_module_id"


class Rollback(Exception):
    """Raised to leave a transaction.atomic block by rolling it back."""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--edxapp", required=True)
    parser.add_argument("--csmh", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--edxapp-db", required=True)
    parser.add_argument("--csmh-db", required=True)
    parser.add_argument("--extended-table", required=True)
    parser.add_argument("--flags", required=True, choices=sorted(ROUTES))
    parser.add_argument("--first-extended-id", required=True, type=int)
    parser.add_argument("--steps", default=",".join(STEPS), help="the steps to run, in order")
    parser.add_argument("--skip", default="", help="steps not to run")
    return parser.parse_args()


def host_port(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def configure_django(args, **extra_settings):
    """Django with edx-platform's models, its `default` database the proxy, and `extra_settings` on top."""
    host, port = host_port(args.proxy)
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["edx_courseware.apps.CoursewareConfig"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.mysql",
                "HOST": host,
                "PORT": port,
                "USER": args.user,
                "PASSWORD": args.password,
                "NAME": args.edxapp_db,
                "OPTIONS": {"isolation_level": "read committed", "charset": "utf8mb4"},
            }
        },
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        **extra_settings,
    )
    django.setup()


def statement_text(sql, params):
    """A statement as Django sent it, its values interpolated as mysqlclient does."""
    try:
        return sql % tuple(repr(p) for p in params) if params else sql
    except (TypeError, ValueError):
        return f"{sql} with {params!r}"


def naive(value):
    """A datetime as the server stores it (Django hands back aware UTC datetimes with USE_TZ)."""
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def orm_row(entry):
    """A StudentModuleHistory object as a Row."""
    return Row(
        entry.id,
        entry.version,
        naive(entry.created),
        entry.state,
        entry.grade,
        entry.max_grade,
        entry.student_module_id,
    )


class Scenario:
    """The Django side, the oracle, and the report."""

    def __init__(self, args):
        import MySQLdb

        self.args = args
        self.flags = args.flags
        self.reads_old, self.reads_ext, self.writes_ext, self.deletes_old, self.deletes_ext = ROUTES[args.flags]
        self.first_extended_id = args.first_extended_id
        self.old_table = f"`{args.edxapp_db}`.`courseware_studentmodulehistory`"
        self.ext_table = f"`{args.csmh_db}`.`{args.extended_table}`"
        self.direct_edxapp = self.direct(MySQLdb, args.edxapp, args.edxapp_db)
        self.direct_csmh = self.direct(MySQLdb, args.csmh, args.csmh_db)
        self.checks = 0
        self.failures = []
        self.step = None
        self.statements = []
        self.new_module = None

    def direct(self, mysqldb, address, database):
        host, port = host_port(address)
        conn = mysqldb.connect(
            host=host,
            port=port,
            user=self.args.user,
            password=self.args.password,
            database=database,
            charset="utf8mb4",
            autocommit=True,
        )
        return conn

    # -- the oracle -------------------------------------------------------------------------------------------

    def table_rows(self, conn, table, where=""):
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT {COLUMNS} FROM {table} {where} ORDER BY id")
            return {row[0]: Row(*row) for row in cursor.fetchall()}

    def old_rows(self, where=""):
        return self.table_rows(self.direct_edxapp, self.old_table, where)

    def ext_rows(self, where=""):
        return self.table_rows(self.direct_csmh, self.ext_table, where)

    def visible(self):
        """Every row edxapp must see, by id: an id in both tables is the extended table's row."""
        rows = {}
        if self.reads_old:
            rows.update(self.old_rows())
        if self.reads_ext:
            rows.update(self.ext_rows())
        return rows

    def expected_history(self, modules):
        """What `filter(student_module__in=modules).order_by('-id')` must return."""
        rows = [row for row in self.visible().values() if row.student_module_id in modules]
        return sorted(rows, key=lambda row: row.id, reverse=True)

    # -- reporting --------------------------------------------------------------------------------------------

    def log(self, text):
        print(text, flush=True)

    def check(self, what, actual, expected):
        self.checks += 1
        if actual == expected:
            self.log(f"  ok    {what}")
            return True
        self.log(f"  FAIL  {what}")
        self.failures.append(
            f"[{self.flags}] step {self.step}: {what}\n"
            f"    expected: {expected!r}\n    actual:   {actual!r}\n" + self.recent_sql()
        )
        return False

    def recent_sql(self, count=12):
        lines = [f"      {sql}" for sql in self.statements[-count:]]
        return "    last SQL Django sent in this step:\n" + "\n".join(lines) + "\n"

    def record(self, execute, sql, params, many, context):
        """Django's execute wrapper: remembers each statement (values interpolated as mysqlclient does)."""
        self.statements.append(statement_text(sql, params))
        return execute(sql, params, many, context)

    # -- helpers ----------------------------------------------------------------------------------------------

    def request(self):
        """One LMS request: edx-platform runs views with ATOMIC_REQUESTS, and the request cache starts empty."""
        from django.db import transaction
        from edx_courseware.models import begin_request

        begin_request()
        return transaction.atomic()

    def new_history_id(self, written_before):
        from edx_courseware.models import WRITTEN

        self.check("the save wrote one history row", len(WRITTEN), written_before + 1)
        return WRITTEN[-1]

    def check_location(self, history_id, what):
        """A history row written through the proxy is in the table the flags write to, and only there."""
        place = (history_id in self.old_rows(), history_id in self.ext_rows())
        if self.writes_ext:
            self.check(f"{what} (id {history_id}) is in the extended table only", place, (False, True))
            self.check(
                f"{what}: id {history_id} comes from the extended table's range",
                history_id >= self.first_extended_id,
                True,
            )
        else:
            self.check(f"{what} (id {history_id}) is in the old table only", place, (True, False))

    def check_absent(self, history_id, what):
        place = (history_id in self.old_rows(), history_id in self.ext_rows())
        self.check(f"{what} (id {history_id}) is in neither table", place, (False, False))

    def save_state(self, module, state, grade=None):
        module.state = state
        module.grade = grade
        module.save()

    def module(self, module_id):
        from edx_courseware.models import StudentModule

        return StudentModule.objects.get(id=module_id)

    # -- steps ------------------------------------------------------------------------------------------------

    def step_baseline(self):
        """Before anything is written: the whole history, newest first, as the flags say it is read."""
        from edx_courseware.models import StudentModuleHistory

        old, ext = self.old_rows(), self.ext_rows()
        if self.flags != "off":
            self.check("some ids are in both tables, as the migration copies them", bool(set(old) & set(ext)), True)
        actual = [orm_row(h) for h in StudentModuleHistory.objects.order_by("-id")]
        expected = sorted(self.visible().values(), key=lambda row: row.id, reverse=True)
        self.check("all history, newest first, each id once, copies read from the extended table", actual, expected)

    def step_create(self):
        """A management command (autocommit) creates a learner's state of a new problem, and of a video."""
        from edx_courseware.models import WRITTEN, StudentModule, begin_request

        begin_request()
        written = len(WRITTEN)
        module = StudentModule.objects.create(
            student_id=ALICE,
            course_id=COURSE,
            module_state_key=NEW_PROBLEM,
            module_type="problem",
            state='{"attempts": 0}',
            max_grade=1.0,
        )
        self.new_module = module.id
        history_id = self.new_history_id(written)
        self.check_location(history_id, "the history row of a new problem module")
        stored = {**self.old_rows(), **self.ext_rows()}[history_id]
        self.check(
            "the stored history row has the module's state, grade and time",
            (stored.state, stored.grade, stored.max_grade, stored.student_module_id, stored.created),
            (module.state, None, 1.0, module.id, naive(module.modified)),
        )
        video = StudentModule.objects.create(
            student_id=ALICE, course_id=COURSE, module_state_key=VIDEO, module_type="video", state="{}"
        )
        self.check("no history is kept for a video", len(WRITTEN), written + 1)
        where = f"WHERE student_module_id = {int(video.id)}"
        rows = (self.old_rows(where), self.ext_rows(where))
        self.check("no history row for the video in either table", rows, ({}, {}))

    def step_second_save(self):
        """A request saves the new module twice: one INSERT, then `get(id=...)` and an UPDATE by id of that row."""
        from edx_courseware.models import REQUEST_CACHE, WRITTEN

        module = self.module(self.new_module)
        written = len(WRITTEN)
        first = None

        def request():
            nonlocal first
            with self.request():
                self.save_state(module, '{"attempts": 1}', 0.0)
                first = REQUEST_CACHE[module.id]
                self.save_state(module, '{"attempts": 1, "saved": "twice"}', 1.0)

        request()
        history_id = self.new_history_id(written)
        self.check("the second save updated the first save's row", history_id, first)
        self.check_location(history_id, "the updated history row")
        stored = {**self.old_rows(), **self.ext_rows()}[history_id]
        self.check(
            "the row holds the second save's state and grade",
            (stored.state, stored.grade),
            ('{"attempts": 1, "saved": "twice"}', 1.0),
        )
        where = f"WHERE student_module_id = {int(module.id)}"
        self.check(
            "the new module has two history rows in all",
            len(self.old_rows(where)) + len(self.ext_rows(where)),
            2,
        )

    def step_user_state_read(self):
        """The XBlock user-state client's read: a literal list of modules, newest first."""
        from edx_courseware.models import StudentModuleHistory

        modules = [ALICE_PROBLEM_0, self.new_module, BOB_PROBLEM_0]
        actual = [orm_row(h) for h in StudentModuleHistory.objects.filter(student_module__in=modules).order_by("-id")]
        ids = [row.id for row in actual]
        self.check("each id once", len(ids), len(set(ids)))
        self.check("history of a list of modules, newest first", actual, self.expected_history(modules))

    def step_subquery_read(self):
        """The staff submission-history view's read: the modules as a queryset (a subquery), prefetched.

        The subquery joins courseware_studentmodule and auth_user, tables of the edxapp database."""
        from edx_courseware.models import StudentModule, StudentModuleHistory

        learners = [("alice", PROBLEMS[0], ALICE_PROBLEM_0), ("bob", PROBLEMS[1], BOB_PROBLEM_1)]
        for username, problem, module_id in learners:
            modules = StudentModule.objects.filter(
                course_id=COURSE, module_state_key=problem, student__username=username
            )
            actual = [
                (orm_row(h), h.student_module.module_state_key)
                for h in StudentModuleHistory.objects.prefetch_related("student_module")
                .filter(student_module__in=modules)
                .order_by("-id")
            ]
            expected = [(row, problem) for row in self.expected_history([module_id])]
            self.check(f"{username}'s submission history, newest first, with its module prefetched", actual, expected)

    def step_queryset_shapes(self):
        """Slicing, count(), exists(), get(id=...) and latest('created')."""
        from edx_courseware.models import StudentModuleHistory

        modules = [ALICE_PROBLEM_0, ALICE_PROBLEM_1, self.new_module, BOB_PROBLEM_0]
        expected = self.expected_history(modules)
        queryset = StudentModuleHistory.objects.filter(student_module__in=modules).order_by("-id")
        visible = self.visible()

        def each(what, thunk, wanted):
            self.check(what, thunk(), wanted)

        each("slice [1:3]", lambda: [h.id for h in queryset[1:3]], [row.id for row in expected[1:3]])
        each("count() of a list of modules", queryset.count, len(expected))
        each("count() of the whole history", StudentModuleHistory.objects.count, len(visible))
        of_module = StudentModuleHistory.objects.filter
        each("exists() for a module with history", of_module(student_module_id=self.new_module).exists, True)
        each("exists() for a module without history", of_module(student_module_id=424242).exists, False)
        newest_new = max(row.id for row in self.expected_history([self.new_module]))
        for history_id in [newest_new, 1, 13, NEVER_COPIED]:

            def get(history_id=history_id):
                try:
                    return orm_row(StudentModuleHistory.objects.get(id=history_id))
                except StudentModuleHistory.DoesNotExist:
                    return None

            each(f"get(id={history_id})", get, visible.get(history_id))
        if expected:
            each(
                "latest('created')",
                lambda: orm_row(queryset.latest("created")),
                max(expected, key=lambda row: row.created),
            )
            each(
                "earliest('created')",
                lambda: orm_row(queryset.earliest("created")),
                min(expected, key=lambda row: row.created),
            )

    def step_transactions(self):
        """A committed request, a request rolled back by an exception, and nested atomic blocks (savepoints)."""
        from django.db import transaction
        from edx_courseware.models import WRITTEN

        module = self.module(self.new_module)
        written = len(WRITTEN)
        with self.request():
            self.save_state(module, '{"attempts": 2}', 1.0)
            committed = WRITTEN[-1]
            self.check_absent(committed, "a row of an uncommitted request, seen from another connection")
        self.new_history_id(written)
        self.check_location(committed, "the row of a committed request")

        old_before, ext_before = set(self.old_rows()), set(self.ext_rows())
        try:
            with self.request():
                self.save_state(module, '{"attempts": 3, "rolled": "back"}', 0.0)
                rolled_back = WRITTEN[-1]
                raise Rollback()
        except Rollback:
            pass
        self.check_absent(rolled_back, "the row of a rolled-back request")
        self.check(
            "a rolled-back request leaves both tables as they were",
            (set(self.old_rows()), set(self.ext_rows())),
            (old_before, ext_before),
        )
        module.refresh_from_db()

        other, third = self.module(ALICE_PROBLEM_1), self.module(BOB_PROBLEM_1)
        with self.request():
            self.save_state(module, '{"attempts": 3}', 1.0)
            outer = WRITTEN[-1]
            try:
                with transaction.atomic():
                    self.save_state(other, '{"attempts": 9, "undone": true}', 0.0)
                    undone = WRITTEN[-1]
                    raise Rollback()
            except Rollback:
                pass
            with transaction.atomic():
                self.save_state(third, '{"attempts": 4}', 1.0)
                kept = WRITTEN[-1]
                with transaction.atomic():
                    # The second save in this request: an UPDATE of the outer block's row, in a savepoint.
                    self.save_state(module, '{"attempts": 3, "saved": "in a savepoint"}', 1.0)
        self.check_location(outer, "the outer block's row")
        self.check_location(kept, "the row of a released savepoint")
        self.check_absent(undone, "the row of a savepoint rolled back")
        stored = self.ext_rows() if self.writes_ext else self.old_rows()
        self.check(
            "the outer row was updated inside a savepoint",
            stored[outer].state,
            '{"attempts": 3, "saved": "in a savepoint"}',
        )
        modules = [self.new_module, ALICE_PROBLEM_1, BOB_PROBLEM_1]
        self.check(
            "the ORM sees the committed rows and not the rolled-back ones",
            history_ids(modules),
            [row.id for row in self.expected_history(modules)],
        )

    def step_delete(self):
        """Deleting learner state: the collector's cascade, DELETE ... WHERE student_module_id IN (...)."""
        from edx_courseware.models import StudentModule

        def counts(module_id):
            where = f"WHERE student_module_id = {int(module_id)}"
            return len(self.old_rows(where)), len(self.ext_rows(where))

        new_before = counts(self.new_module)
        self.check("the new module has history to delete", sum(new_before) > 0, True)
        with self.request():
            self.module(self.new_module).delete()
        self.check("the new module's history is deleted from both tables", counts(self.new_module), (0, 0))

        old_before, ext_before = counts(ALICE_PROBLEM_0)
        self.check("the sample module has history in the old table", old_before > 0, True)
        with self.request():
            deleted, by_model = StudentModule.objects.filter(id=ALICE_PROBLEM_0).delete()
        expected = (0 if self.deletes_old else old_before, 0 if self.deletes_ext else ext_before)
        self.check("the sample module's history is deleted where the flags say", counts(ALICE_PROBLEM_0), expected)
        self.check(
            "the collector counts the deleted module and the history rows the proxy reported",
            (deleted, by_model.get("courseware.StudentModule")),
            (1 + (old_before - expected[0]) + (ext_before - expected[1]), 1),
        )
        modules = [self.new_module, ALICE_PROBLEM_0]
        self.check(
            "the ORM finds no history for the deleted modules",
            history_ids(modules),
            [row.id for row in self.expected_history(modules)],
        )

    def step_final(self):
        """The whole history at the end, newest first."""
        from edx_courseware.models import StudentModuleHistory

        actual = [orm_row(h) for h in StudentModuleHistory.objects.order_by("-id")]
        expected = sorted(self.visible().values(), key=lambda row: row.id, reverse=True)
        self.check("all history at the end, newest first, each id once", actual, expected)
        self.check("count()", StudentModuleHistory.objects.count(), len(expected))

    # -- running ----------------------------------------------------------------------------------------------

    def run(self, steps):
        from django.db import connection

        with connection.execute_wrapper(self.record):
            for name in steps:
                self.step = name
                self.statements = []
                self.log(f"{name}: {getattr(self, 'step_' + name).__doc__.splitlines()[0]}")
                try:
                    getattr(self, "step_" + name)()
                except Exception:  # pylint: disable=broad-except
                    self.failures.append(f"step {name} raised:\n{traceback.format_exc()}" + self.recent_sql())
                    self.log(f"  FAIL  raised {sys.exc_info()[1]!r}")


def history_ids(modules):
    """Ids of the history of `modules`, newest first, as the ORM returns them."""
    from edx_courseware.models import StudentModuleHistory

    queryset = StudentModuleHistory.objects.filter(student_module__in=modules).order_by("-id")
    return list(queryset.values_list("id", flat=True))


STEPS = [
    "baseline",
    "create",
    "second_save",
    "user_state_read",
    "subquery_read",
    "queryset_shapes",
    "transactions",
    "delete",
    "final",
]


def main():
    args = parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    configure_django(args)
    scenario = Scenario(args)
    skip = [step for step in args.skip.split(",") if step]
    steps = [step for step in args.steps.split(",") if step and step not in skip]
    unknown = [step for step in steps + skip if step not in STEPS]
    if unknown:
        print(f"unknown steps: {unknown}; known: {STEPS}")
        return 2
    if "create" not in steps and any(s in steps for s in STEPS[2:8]):
        steps.insert(0, "create")
    scenario.run(steps)
    print(f"\n{scenario.checks} checks, {len(scenario.failures)} failed")
    if scenario.failures:
        print("\nFAILURES\n" + "\n".join(scenario.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
