"""Connects with one Python driver, runs statements, and reports what the application sees of each as one JSON
line: the exception's class and the code and message the driver reports, or the rows.

Usage: client_error.py DRIVER --address HOST:PORT --user U --password P [--database DB] [--ssl-ca CA] SQL...

DRIVER is `mysqlclient` (Django's driver, MySQLdb on MariaDB Connector/C) or `pymysql`. A connection that cannot
be opened is reported as the first line, with step "connect", and nothing else runs. With --ssl-ca the driver
requires TLS and verifies the server's certificate against CA; the first line is then step "tls" with the cipher
of the client's own connection, as far as the driver tells it (PyMySQL does; mysqlclient does not: null). The exit
status is 0 whatever the statements did.
"""

import argparse
import json
import sys


def connect(driver, host, port, user, password, database, ca):
    if driver == "mysqlclient":
        import MySQLdb

        tls = {"ssl_mode": "REQUIRED", "ssl": {"ca": ca}} if ca else {}
        return MySQLdb.connect(host=host, port=port, user=user, password=password, database=database or "", **tls)
    import pymysql

    tls = {"ssl_ca": ca, "ssl_verify_cert": True, "ssl_verify_identity": True} if ca else {}
    return pymysql.connect(host=host, port=port, user=user, password=password, database=database, **tls)


def client_cipher(conn):
    """The cipher of the driver's own connection, where the driver exposes its socket (PyMySQL)."""
    sock = getattr(conn, "_sock", None)
    cipher = getattr(sock, "cipher", None)
    return cipher()[0] if cipher else None


def report(step, error=None, rows=None):
    line = {"step": step}
    if error is not None:
        line["class"] = type(error).__name__
        line["code"] = error.args[0] if error.args else None
        line["message"] = error.args[1] if len(error.args) > 1 else str(error)
    else:
        line["rows"] = rows
    print(json.dumps(line), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("driver", choices=["mysqlclient", "pymysql"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--database")
    parser.add_argument("--ssl-ca")
    parser.add_argument("sql", nargs="*")
    args = parser.parse_intermixed_args()
    host, port = args.address.rsplit(":", 1)
    try:
        conn = connect(args.driver, host, int(port), args.user, args.password, args.database, args.ssl_ca)
    except Exception as error:  # noqa: BLE001 - the class is what is reported
        report("connect", error=error)
        return 0
    if args.ssl_ca:
        report("tls", rows=[[client_cipher(conn)]])
    for sql in args.sql:
        try:
            cursor = conn.cursor()
            cursor.execute(sql)
            rows = [[str(value) for value in row] for row in cursor.fetchall()] if cursor.description else []
            report(sql, rows=rows)
        except Exception as error:  # noqa: BLE001
            report(sql, error=error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
