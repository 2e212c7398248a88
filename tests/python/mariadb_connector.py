"""Runs statements with MariaDB Connector/Python (the `mariadb` package, on MariaDB Connector/C) and reports what
the application sees, one JSON line per step: the rows and row count, or the exception's class, code and message.

A binary cursor executes a statement with parameters directly: Connector/C sends COM_STMT_PREPARE and, before
reading its answer, a COM_STMT_EXECUTE naming statement 0xFFFFFFFF ("the statement just prepared"); executemany
sends COM_STMT_BULK_EXECUTE the same way when the server offers bulk operations.

Usage: mariadb_connector.py --address HOST:PORT --user U --password P --database DB STEP...

Each STEP is a JSON object: {"sql": SQL, "params": [...]} runs cursor.execute, {"sql": SQL, "many": [[...], ...]}
runs cursor.executemany. A step that fails does not end the script; the exit status is 0 whatever happened.
"""

import argparse
import json


def report(step, error=None, **fields):
    line = {"step": step, **fields}
    if error is not None:
        line["class"] = type(error).__name__
        line["code"] = getattr(error, "errno", None)
        line["message"] = str(error)
    print(json.dumps(line), flush=True)


def run(conn, index, step):
    cursor = conn.cursor(binary=True)
    try:
        if "many" in step:
            cursor.executemany(step["sql"], [tuple(row) for row in step["many"]])
        else:
            cursor.execute(step["sql"], tuple(step.get("params", ())))
        rows = [[str(value) for value in row] for row in cursor.fetchall()] if cursor.description else []
        report(index, rows=rows, rowcount=cursor.rowcount)
    except Exception as error:  # noqa: BLE001 - the class is what is reported
        report(index, error=error)
    finally:
        cursor.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("steps", nargs="*")
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    import mariadb

    try:
        conn = mariadb.connect(
            host=host, port=int(port), user=args.user, password=args.password, database=args.database, autocommit=True
        )
    except Exception as error:  # noqa: BLE001
        report("connect", error=error)
        return 0
    report("connect")
    for index, step in enumerate(args.steps):
        run(conn, index, json.loads(step))
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
