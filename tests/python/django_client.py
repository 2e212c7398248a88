"""Runs one scenario of what Django's MySQL backend does with mysqlclient, once directly against the server and
once through csmh-proxy, and compares everything the application could observe: rows and their Python types,
cursor.description, rowcount, insert ids, warnings, errors, autocommit state, result sets.

Usage: django_client.py SCENARIO --direct HOST:PORT --proxy HOST:PORT --user U --password P --database DB

Exit status 0 when both runs observed the same and met the scenario's expectations; 1 with a readable report
otherwise. Both runs use the same database, one after the other: every scenario creates its tables afresh and
drops them at the end.
"""

import argparse
import datetime
import decimal
import pprint
import sys
import traceback

import MySQLdb
import MySQLdb.cursors
from MySQLdb.constants import CLIENT

# Django's savepoint names: "s<thread ident>_x<n>", back-quoted by the MySQL backend.
SAVEPOINT = "`s140245166851904_x{}`"

MAX_UNSIGNED_BIGINT = 18446744073709551615
EMOJI_TEXT = "Grüße 🎓 naïve — 𝄞"


class Run:
    """What one run observed, in order, and the expectations it missed."""

    def __init__(self, label):
        self.label = label
        self.observed = []
        self.missed = []

    def observe(self, what, value):
        self.observed.append((what, value))

    def expect(self, what, actual, wanted):
        self.observe(what, actual)
        if actual != wanted:
            self.missed.append(f"{what}: wanted {wanted!r}, got {actual!r}")


def typed(value):
    """A value as the application sees it: its Python type and its repr."""
    if isinstance(value, (list, tuple)):
        return [typed(item) for item in value]
    return (type(value).__name__, repr(value))


def connect(target, args, extra_flags=0):
    """A connection set up as Django's MySQL backend sets one up (get_new_connection, then set_autocommit and
    init_connection_state)."""
    host, port = target.rsplit(":", 1)
    conn = MySQLdb.connect(
        host=host,
        port=int(port),
        user=args.user,
        password=args.password,
        database=args.database,
        charset="utf8mb4",
        client_flag=CLIENT.FOUND_ROWS | extra_flags,
    )
    conn.autocommit(True)
    with conn.cursor() as cursor:
        cursor.execute("SELECT @@SQL_AUTO_IS_NULL")
        assignments = ["SET SQL_AUTO_IS_NULL = 0"] if cursor.fetchone()[0] else []
        assignments.append("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cursor.execute("; ".join(assignments))
    return conn


def observe_result(run, what, cursor):
    """The current result set of `cursor`: description, rows with types, rowcount."""
    run.observe(f"{what}: description", cursor.description)
    run.observe(f"{what}: rows", typed(cursor.fetchall()) if cursor.description else None)
    run.observe(f"{what}: rowcount", cursor.rowcount)


def observe_error(run, what, action):
    """Runs `action`, which must fail, and records the exception's class, code and message."""
    try:
        action()
    except MySQLdb.Error as error:
        run.observe(f"{what}: error", (type(error).__name__, error.args))
        return error
    run.missed.append(f"{what}: no error raised")
    return None


def ok_packet(run, what, conn, cursor):
    """What the OK packet of the last statement told the client."""
    run.observe(
        f"{what}: OK packet",
        {
            "rowcount": cursor.rowcount,
            "lastrowid": cursor.lastrowid,
            "insert_id": conn.insert_id(),
            "affected_rows": conn.affected_rows(),
            "warning_count": conn.warning_count(),
            "info": conn.info(),
            "autocommit": conn.get_autocommit(),
        },
    )


# ---------------------------------------------------------------------------------------------------------------
# Scenarios


def scenario_types(run, target, args):
    """Connection set-up, and values and metadata of the column types Django models use."""
    conn = connect(target, args)
    cursor = conn.cursor()
    run.observe("server info", (conn.get_server_info(), conn.get_proto_info(), conn.get_host_info()))
    run.observe("connection character set", conn.character_set_name())
    cursor.execute("SELECT CONNECTION_ID()")
    run.expect("thread_id() is the server's CONNECTION_ID()", conn.thread_id() == cursor.fetchone()[0], True)
    # DatabaseWrapper.mysql_server_data
    cursor.execute(
        "SELECT VERSION(), @@sql_mode, @@default_storage_engine, @@sql_auto_is_null, @@lower_case_table_names, "
        "CONVERT_TZ('2001-01-01 01:00:00', 'UTC', 'UTC') IS NOT NULL"
    )
    observe_result(run, "mysql_server_data", cursor)
    cursor.execute(
        "SELECT @@tx_isolation, @@sql_auto_is_null, @@autocommit, @@character_set_client, "
        "@@character_set_connection, @@character_set_results, @@collation_connection"
    )
    session = cursor.fetchone()
    run.expect("isolation level", session[0], "READ-COMMITTED")
    run.expect("character sets", session[3:6], ("utf8mb4",) * 3)
    run.observe("session", typed(session))

    cursor.execute("DROP TABLE IF EXISTS typed")
    cursor.execute(
        """CREATE TABLE typed (
             id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
             data blob NULL,
             token varbinary(16) NULL,
             amount decimal(12, 4) NULL,
             happened datetime(6) NULL,
             day date NULL,
             duration time(3) NULL,
             payload json NULL,
             big bigint unsigned NULL,
             small smallint NULL,
             flag bool NULL,
             score double NULL,
             title varchar(100) NULL,
             body longtext NULL,
             kind enum('problem', 'video') NULL
           ) DEFAULT CHARSET = utf8mb4"""
    )
    columns = "data, token, amount, happened, day, duration, payload, big, small, flag, score, title, body, kind"
    values = (
        b"\x00\xff\x10 raw \x80\xfe",
        b"\x01\x02\x03",
        decimal.Decimal("-12345678.9012"),
        datetime.datetime(2024, 3, 4, 10, 1, 7, 123456),
        datetime.date(2024, 2, 29),
        datetime.timedelta(hours=26, minutes=2, seconds=3),
        '{"attempts": 2, "answers": {"2_1": ["choice_1"]}, "emoji": "🎓"}',
        MAX_UNSIGNED_BIGINT,
        -32768,
        True,
        0.1 + 0.2,
        EMOJI_TEXT,
        "x" * 70000,
        "problem",
    )
    cursor.execute(f"INSERT INTO typed ({columns}) VALUES ({', '.join(['%s'] * len(values))})", values)
    cursor.execute("INSERT INTO typed (id) VALUES (DEFAULT)")
    cursor.execute(f"SELECT id, {columns} FROM typed ORDER BY id")
    run.observe("SELECT typed: description", cursor.description)
    rows = cursor.fetchall()
    run.observe("SELECT typed: rows", typed(rows))
    run.expect("blob is bytes", rows[0][1], values[0])
    run.expect("unsigned bigint", (type(rows[0][8]).__name__, rows[0][8]), ("int", MAX_UNSIGNED_BIGINT))
    run.expect("decimal", rows[0][3], values[2])
    run.expect("datetime(6)", rows[0][4], values[3])
    run.expect("utf8mb4 text", rows[0][12], EMOJI_TEXT)
    run.expect("NULLs", rows[1][1:], (None,) * len(values))

    cursor.execute(
        "SELECT CAST(18446744073709551615 AS UNSIGNED) AS u, 1.5 * 2 AS d, NOW(6) > '2000-01-01' AS b, "
        "_binary'\\0x' AS raw, NULL AS nothing, '🎓' AS cap, JSON_OBJECT('k', 'é') AS j, "
        "CAST('2024-01-02 03:04:05.678901' AS DATETIME(6)) AS dt"
    )
    observe_result(run, "SELECT expressions", cursor)

    server_side = conn.cursor(MySQLdb.cursors.SSCursor)
    server_side.execute("SELECT id, title, big FROM typed ORDER BY id")
    run.observe("unbuffered cursor: description", server_side.description)
    run.observe("unbuffered cursor: rows", typed(list(server_side)))
    server_side.close()

    # A statement and a row of more than 16 MiB travel as several protocol packets each way.
    large_text = "é" * (9 * 1024 * 1024)
    large_blob = bytes(range(256)) * (70 * 1024)
    cursor.execute("DROP TABLE IF EXISTS large_values")
    cursor.execute("CREATE TABLE large_values (body longtext, data longblob) DEFAULT CHARSET = utf8mb4")
    cursor.execute("INSERT INTO large_values VALUES (%s, %s)", (large_text, large_blob))
    run.expect("INSERT of more than 16 MiB: rowcount", cursor.rowcount, 1)
    cursor.execute("SELECT body, data, LENGTH(body) FROM large_values")
    run.observe("SELECT of more than 16 MiB: description", cursor.description)
    body, data, length = cursor.fetchone()
    run.expect("large text", (len(body), body == large_text), (len(large_text), True))
    run.expect("large blob", (type(data).__name__, data == large_blob), ("bytes", True))
    run.expect("large text's LENGTH()", length, len(large_text.encode()))

    conn.select_db("information_schema")
    cursor.execute("SELECT DATABASE()")
    run.expect("database after select_db()", cursor.fetchone(), ("information_schema",))
    conn.select_db(args.database)
    cursor.execute("DROP TABLE typed, large_values")
    conn.close()


def scenario_feedback(run, target, args):
    """What Django reads back after writes: rowcount with FOUND_ROWS, insert ids, warnings, errors."""
    conn = connect(target, args)
    cursor = conn.cursor()
    cursor.execute("DROP TABLE IF EXISTS counters")
    cursor.execute(
        "CREATE TABLE counters (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, name varchar(20) NOT NULL UNIQUE, "
        "hits int NOT NULL, code varchar(3) NULL)"
    )
    cursor.execute("INSERT INTO counters (name, hits) VALUES (%s, %s)", ("first", 1))
    ok_packet(run, "INSERT", conn, cursor)
    run.expect("insert_id of the first row", conn.insert_id(), 1)
    # bulk_create: one INSERT with many rows; lastrowid is the first new id.
    cursor.execute("INSERT INTO counters (name, hits) VALUES (%s, %s), (%s, %s), (%s, %s)", ("a", 1, "b", 2, "c", 3))
    ok_packet(run, "bulk INSERT", conn, cursor)
    cursor.executemany("INSERT INTO counters (name, hits) VALUES (%s, %s)", [("d", 4), ("e", 5)])
    ok_packet(run, "executemany INSERT", conn, cursor)

    cursor.execute("UPDATE counters SET hits = hits WHERE name = %s", ("a",))
    ok_packet(run, "UPDATE matching an unchanged row", conn, cursor)
    run.expect("FOUND_ROWS: rowcount counts matched rows", cursor.rowcount, 1)
    cursor.execute("UPDATE counters SET hits = hits + 1 WHERE hits < %s", (3,))
    ok_packet(run, "UPDATE changing rows", conn, cursor)
    cursor.execute("UPDATE counters SET hits = 0 WHERE name = %s", ("nobody",))
    ok_packet(run, "UPDATE matching nothing", conn, cursor)
    cursor.execute("DELETE FROM counters WHERE name IN (%s, %s)", ("d", "e"))
    ok_packet(run, "DELETE", conn, cursor)
    run.expect("DELETE rowcount", cursor.rowcount, 2)

    cursor.execute("INSERT IGNORE INTO counters (name, hits, code) VALUES (%s, %s, %s)", ("long", 1, "abcdef"))
    ok_packet(run, "truncating INSERT IGNORE", conn, cursor)
    run.expect("warning_count()", conn.warning_count(), 1)
    cursor.execute("SHOW WARNINGS")
    observe_result(run, "SHOW WARNINGS", cursor)
    run.observe("show_warnings()", conn.show_warnings())
    cursor.execute("SELECT code FROM counters WHERE name = 'long'")
    run.expect("truncated value", cursor.fetchone(), ("abc",))

    error = observe_error(run, "syntax error", lambda: cursor.execute("SELEC name FROM counters"))
    run.expect("syntax error code", error and (type(error).__name__, error.args[0]), ("ProgrammingError", 1064))
    error = observe_error(
        run, "duplicate key", lambda: cursor.execute("INSERT INTO counters (name, hits) VALUES (%s, 9)", ("a",))
    )
    run.expect("duplicate key code", error and (type(error).__name__, error.args[0]), ("IntegrityError", 1062))
    observe_error(run, "unknown table", lambda: cursor.execute("SELECT * FROM no_such_table"))
    observe_error(run, "unknown column", lambda: cursor.execute("SELECT nope FROM counters"))
    observe_error(run, "division by zero in strict mode", lambda: cursor.execute("UPDATE counters SET hits = 1 / 0"))

    run.expect("ping() after the errors", conn.ping(), None)
    cursor.execute("SELECT id, name, hits, code FROM counters ORDER BY id")
    observe_result(run, "rows after the errors", cursor)
    cursor.execute("SELECT id FROM counters WHERE name = 'nobody'")
    observe_result(run, "empty result", cursor)
    cursor.execute("DROP TABLE counters")
    conn.close()


def scenario_transactions(run, target, args):
    """Autocommit toggling, a rolled-back transaction and the savepoints of nested atomic blocks."""
    conn = connect(target, args)
    other = connect(target, args)
    cursor, other_cursor = conn.cursor(), other.cursor()
    cursor.execute("DROP TABLE IF EXISTS entries")
    cursor.execute("CREATE TABLE entries (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, name varchar(40) NOT NULL)")

    def names(which):
        which.execute("SELECT name FROM entries ORDER BY id")
        return [row[0] for row in which.fetchall()]

    def in_transaction():
        cursor.execute("SELECT @@in_transaction")
        return cursor.fetchone()[0]

    run.expect("get_autocommit() after connecting", conn.get_autocommit(), True)
    conn.autocommit(False)
    run.expect("get_autocommit() after autocommit(False)", conn.get_autocommit(), False)
    run.expect("rows seen at the start of the transaction", names(cursor), [])
    run.expect("get_autocommit() after a SELECT in the transaction", conn.get_autocommit(), False)
    cursor.execute("INSERT INTO entries (name) VALUES ('committed')")
    run.expect("in a transaction after the INSERT", in_transaction(), 1)
    run.expect("READ COMMITTED: other connection before COMMIT", names(other_cursor), [])
    conn.commit()
    run.expect("get_autocommit() after COMMIT", conn.get_autocommit(), False)
    run.expect("READ COMMITTED: other connection after COMMIT", names(other_cursor), ["committed"])
    conn.autocommit(True)
    run.expect("get_autocommit() after autocommit(True)", conn.get_autocommit(), True)

    conn.autocommit(False)
    cursor.execute("INSERT INTO entries (name) VALUES ('rolled back 1'), ('rolled back 2')")
    ok_packet(run, "INSERT in the transaction", conn, cursor)
    conn.rollback()
    conn.autocommit(True)
    run.expect("rows after ROLLBACK", names(cursor), ["committed"])

    # with atomic(): INSERT; with atomic(): (rolled back) ...; with atomic(): (released) ...
    conn.autocommit(False)
    cursor.execute("INSERT INTO entries (name) VALUES ('outer')")
    cursor.execute(f"SAVEPOINT {SAVEPOINT.format(1)}")
    ok_packet(run, "SAVEPOINT", conn, cursor)
    cursor.execute("INSERT INTO entries (name) VALUES ('inner, rolled back')")
    cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT.format(1)}")
    ok_packet(run, "ROLLBACK TO SAVEPOINT", conn, cursor)
    cursor.execute(f"SAVEPOINT {SAVEPOINT.format(2)}")
    cursor.execute("INSERT INTO entries (name) VALUES ('inner, kept')")
    cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT.format(2)}")
    ok_packet(run, "RELEASE SAVEPOINT", conn, cursor)
    observe_error(run, "ROLLBACK TO a released savepoint", lambda: cursor.execute(f"ROLLBACK TO {SAVEPOINT.format(2)}"))
    run.expect("still in the transaction after the error", in_transaction(), 1)
    conn.commit()
    conn.autocommit(True)
    run.expect("rows after the nested atomic blocks", names(other_cursor), ["committed", "outer", "inner, kept"])
    run.expect("in a transaction after COMMIT", in_transaction(), 0)

    cursor.execute("DROP TABLE entries")
    other.close()
    conn.close()


def scenario_results(run, target, args):
    """Multiple result sets: a multi-statement query and a stored procedure."""
    conn = connect(target, args, CLIENT.MULTI_STATEMENTS)
    cursor = conn.cursor()
    cursor.execute("DROP TABLE IF EXISTS items")
    cursor.execute("DROP PROCEDURE IF EXISTS double_and_list")
    cursor.execute("CREATE TABLE items (id int NOT NULL AUTO_INCREMENT PRIMARY KEY, label varchar(20), n int)")
    cursor.execute(
        "CREATE PROCEDURE double_and_list(IN x int) BEGIN "
        "SELECT x * 2 AS doubled, 'é' AS accent; "
        "SELECT id, label, n FROM items ORDER BY id; "
        "UPDATE items SET n = n + x; "
        "END"
    )

    def observe_sets(what):
        index = 0
        while True:
            observe_result(run, f"{what} [{index}]", cursor)
            index += 1
            if not cursor.nextset():
                break
        run.observe(f"{what}: result sets", index)
        return index

    cursor.execute(
        "INSERT INTO items (label, n) VALUES ('one', 1), ('two', 2); "
        "SELECT LAST_INSERT_ID() AS first_id, ROW_COUNT() AS inserted; "
        "UPDATE items SET n = n * 10 WHERE id = 2; "
        "SELECT id, label, n FROM items ORDER BY id; "
        "SELECT 'no rows' AS nothing FROM items WHERE 1 = 0"
    )
    sets = observe_sets("multi-statement")
    run.expect("multi-statement result sets", sets, 5)
    run.observe("insert_id() after the multi-statement", conn.insert_id())

    cursor.execute("SELECT 1 AS first; SELEC 2; SELECT 3")
    observe_result(run, "multi-statement with an error: first set", cursor)
    observe_error(run, "multi-statement with an error: next set", cursor.nextset)
    cursor.execute("SELECT 'usable' AS after_error")
    observe_result(run, "after the failed multi-statement", cursor)

    cursor.callproc("double_and_list", (21,))
    sets = observe_sets("callproc")
    run.expect("callproc result sets (two SELECTs and the CALL's status)", sets, 3)
    cursor.execute("SELECT @_double_and_list_0")
    observe_result(run, "callproc argument", cursor)
    cursor.execute("CALL double_and_list(1)")
    observe_sets("CALL")
    cursor.execute("SELECT SUM(n) FROM items")
    run.expect("the procedure's UPDATEs ran", cursor.fetchone(), (decimal.Decimal(1 + 20 + 2 * 21 + 2 * 1),))

    cursor.execute("DROP PROCEDURE double_and_list")
    cursor.execute("DROP TABLE items")
    conn.close()


SCENARIOS = {
    "types": scenario_types,
    "feedback": scenario_feedback,
    "transactions": scenario_transactions,
    "results": scenario_results,
}


def run_scenario(name, label, target, args):
    run = Run(label)
    try:
        SCENARIOS[name](run, target, args)
    except Exception:
        run.observe("scenario aborted", traceback.format_exc(limit=3).strip().splitlines()[-1])
        run.missed.append("scenario aborted:\n" + traceback.format_exc())
    return run


def differences(direct, proxy):
    """Human-readable lines for every observation that differs between the runs."""
    lines = []
    for index in range(max(len(direct.observed), len(proxy.observed))):
        left = direct.observed[index] if index < len(direct.observed) else ("(nothing)", None)
        right = proxy.observed[index] if index < len(proxy.observed) else ("(nothing)", None)
        if left != right:
            lines.append(f"#{index} {left[0]}" + ("" if left[0] == right[0] else f" / {right[0]}"))
            lines.append("  direct: " + pprint.pformat(left[1], width=100).replace("\n", "\n          "))
            lines.append("  proxy:  " + pprint.pformat(right[1], width=100).replace("\n", "\n          "))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--direct", required=True)
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args()

    direct = run_scenario(args.scenario, "direct", args.direct, args)
    proxy = run_scenario(args.scenario, "proxy", args.proxy, args)
    diff = differences(direct, proxy)
    failed = False
    for run in (direct, proxy):
        if run.missed:
            failed = True
            print(f"{args.scenario}, {run.label}: {len(run.missed)} expectation(s) not met")
            for miss in run.missed:
                print("  " + miss.replace("\n", "\n  "))
    if diff:
        failed = True
        print(f"{args.scenario}: {len(diff) // 3} observation(s) differ between direct and proxy")
        print("\n".join(diff))
    print(f"{args.scenario}: {len(direct.observed)} observations, {'FAILED' if failed else 'identical'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
