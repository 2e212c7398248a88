"""Logs in with one Python driver, runs statements, and reports what the application sees as one JSON line per
step: the login, then each statement's rows, or the exception's class and the code and message the driver reports.

Usage: client.py DRIVER --address HOST:PORT --user U --password P [--database DB] [--charset CHARSET]
                 [--ca PATH [--ssl-mode MODE]] [--server-public-key PATH] [--change-user U --change-password P] SQL...

DRIVER is `pymysql` (which needs `cryptography` for caching_sha2_password's RSA exchange), `mysqlclient`
(MySQLdb on MariaDB Connector/C, whose caching_sha2_password plugin uses OpenSSL), or `libmysqlclient` (Oracle's
client library, which Tutor's openedx image builds mysqlclient on, as mysql-connector-python's C extension bundles
it; without --ca it uses TLS when the server offers it, without checking the certificate: ssl-mode PREFERRED). With --ca the driver asks for
TLS and verifies the server's certificate against the authority in PATH and the host name (mysqlclient: as
--ssl-mode says, VERIFY_IDENTITY by default; REQUIRED verifies nothing); without it, the connection is plaintext. --server-public-key gives PyMySQL the server's RSA public key (PEM), so that it does not
ask for it. The login step also says whether the driver's connection is encrypted and its cipher, where the
driver tells (PyMySQL). With --change-user, step "change_user" logs in again as that user on the same connection
(COM_CHANGE_USER; mysqlclient only: PyMySQL has no such call). --charset is the connection's character set,
which the drivers also send the user name in. A step that fails ends the script, except a statement's. The exit
status is 0 whatever happened.
"""

import argparse
import json


def connect(args, host, port):
    if args.driver == "libmysqlclient":
        # The C extension first: it brings the OpenSSL it was built with, which `mysql.connector` would otherwise
        # find the system's older one loaded in place of (through Python's ssl module), and fall back to Python.
        import _mysql_connector  # noqa: F401
        import mysql.connector

        if not mysql.connector.HAVE_CEXT:
            raise SystemExit("mysql.connector's C extension (libmysqlclient) is not loaded")

        database = {"database": args.database} if args.database else {}
        return mysql.connector.connect(
            use_pure=False, host=host, port=port, user=args.user, password=args.password, **database
        )
    if args.driver == "mysqlclient":
        import MySQLdb

        # Connector/C has no MYSQL_OPT_SSL_MODE: mysqlclient turns REQUIRED into its "enforce TLS" option, and
        # VERIFY_IDENTITY into that and "verify the server's certificate".
        tls = {"ssl": {"ca": args.ca}, "ssl_mode": args.ssl_mode} if args.ca else {}
        database = {"database": args.database} if args.database else {}
        charset = {"charset": args.charset} if args.charset else {}
        return MySQLdb.connect(
            host=host, port=port, user=args.user, password=args.password, **database, **charset, **tls
        )
    import pymysql

    tls = {"ssl_ca": args.ca, "ssl_verify_cert": True, "ssl_verify_identity": True} if args.ca else {}
    if args.server_public_key:
        with open(args.server_public_key, "rb") as pem:
            tls["server_public_key"] = pem.read()
    charset = {"charset": args.charset} if args.charset else {}
    return pymysql.connect(
        host=host, port=port, user=args.user, password=args.password, database=args.database, **charset, **tls
    )


def encrypted(conn):
    """Whether the driver says its connection is encrypted; None where it does not tell."""
    return getattr(conn, "_secure", None)


def cipher(conn):
    """The cipher of the driver's own connection, where the driver exposes its socket (PyMySQL); else None."""
    sock = getattr(conn, "_sock", None)
    of_socket = getattr(sock, "cipher", None)
    return of_socket()[0] if of_socket else None


def report(step, error=None, **fields):
    line = {"step": step, **fields}
    if error is not None:
        line["class"] = type(error).__name__
        # mysql.connector's errors carry their code and message as attributes, the DB-API drivers' as args.
        line["code"] = getattr(error, "errno", None) or (error.args[0] if error.args else None)
        line["message"] = getattr(error, "msg", None) or (error.args[1] if len(error.args) > 1 else str(error))
    print(json.dumps(line), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("driver", choices=["mysqlclient", "pymysql", "libmysqlclient"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--database")
    parser.add_argument("--charset")
    parser.add_argument("--ca")
    parser.add_argument("--ssl-mode", default="VERIFY_IDENTITY")
    parser.add_argument("--server-public-key")
    parser.add_argument("--change-user")
    parser.add_argument("--change-password")
    parser.add_argument("sql", nargs="*")
    args = parser.parse_intermixed_args()
    host, port = args.address.rsplit(":", 1)
    try:
        conn = connect(args, host, int(port))
    except Exception as error:  # noqa: BLE001 - the class is what is reported
        report("connect", error=error)
        return 0
    report("connect", encrypted=encrypted(conn), cipher=cipher(conn))
    if args.change_user:
        try:
            conn.change_user(args.change_user, args.change_password)
        except Exception as error:  # noqa: BLE001
            report("change_user", error=error)
            return 0
        report("change_user")
    for sql in args.sql:
        try:
            cursor = conn.cursor()
            cursor.execute(sql)
            rows = [[str(value) for value in row] for row in cursor.fetchall()] if cursor.description else []
            report(sql, rows=rows)
        except Exception as error:  # noqa: BLE001
            report(sql, error=error)
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
