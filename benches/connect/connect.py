"""Times new connections with mysqlclient (MySQLdb, Django's MySQL driver), as edxapp opens one per web request.

Each iteration connects and logs in, runs `SELECT 1`, fetches its row and closes the connection, timed with
time.perf_counter_ns() from before the connect to after the close. Iterations are paced one of two ways:
--pause-us waits that long after each iteration (a short gap, as between a few workers' requests); --rate starts
the iterations on a fixed schedule of that many per second (an iteration that starts late is timed from its own
start, and the next ones catch up without waiting). --ssl-ca connects with TLS, verifying the server's certificate
with that authority; --statement runs that statement instead of `SELECT 1`. Prints one JSON object: the loop's wall time and every iteration's latency, both in
nanoseconds.
"""

import json
import time

import MySQLdb

from options import argument_parser


def one_connection(args):
    """Connect, log in, `SELECT 1` (or --statement), fetch, close: what one Django request does with its database
    connection."""
    tls = {"ssl": {"ca": args.ssl_ca}} if args.ssl_ca else {}
    connection = MySQLdb.connect(
        host=args.host, port=args.port, user=args.user, password=args.password, database=args.database, **tls
    )
    cursor = connection.cursor()
    cursor.execute(args.statement or "SELECT 1")
    rows = cursor.fetchall()
    if not args.statement and rows != ((1,),):
        raise SystemExit("SELECT 1 did not return 1")
    cursor.close()
    connection.close()


def timed_loop(args):
    """Runs the iterations with the pacing asked for, returning every iteration's latency in nanoseconds."""
    interval = 1_000_000_000 // args.rate if args.rate else 0
    pause = args.pause_us / 1_000_000
    latencies = []
    next_start = time.perf_counter_ns()
    for _ in range(args.iterations):
        if interval:
            wait = next_start - time.perf_counter_ns()
            if wait > 0:
                time.sleep(wait / 1_000_000_000)
            next_start += interval
        started = time.perf_counter_ns()
        one_connection(args)
        latencies.append(time.perf_counter_ns() - started)
        if pause:
            time.sleep(pause)
    return latencies


def main():
    parser = argument_parser(__doc__)
    parser.add_argument("--rate", type=int, default=0)
    parser.add_argument("--ssl-ca", help="connect with TLS, verifying the server's certificate with this authority")
    parser.add_argument("--statement", help="the statement each connection runs, instead of SELECT 1")
    args = parser.parse_args()
    started = time.perf_counter_ns()
    latencies = timed_loop(args)
    elapsed = time.perf_counter_ns() - started
    print(json.dumps({"elapsed_ns": elapsed, "latencies_ns": latencies}))


if __name__ == "__main__":
    main()
