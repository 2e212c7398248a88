"""Times each step of new connections with PyMySQL, whose steps are Python methods that can be timed one by one.

The connection is the one connect.py makes with mysqlclient, made by PyMySQL the same way (connect, greeting,
login, `SET NAMES`, `SET AUTOCOMMIT = 0`, `SELECT 1`, quit), with a pause of --pause-us after each. Each
iteration's time is split into its steps, timed with time.perf_counter_ns():

- connect: PyMySQL's setting up of the connection object and the TCP connect;
- greeting: reading the server's greeting (what a relay pays a backend connect and a round trip for, and what
  the proxy's preconnect pool has ready);
- login: sending the login and reading its answer;
- setup: the statements PyMySQL runs after the login (`SET NAMES`, then `SET AUTOCOMMIT = 0`);
- statement: `SELECT 1` and its row;
- close: `COM_QUIT` and closing the socket.

Prints one JSON object: the loop's wall time, every iteration's latency, and every iteration's steps, all in
nanoseconds.
"""

import json
import time

import pymysql

from options import argument_parser

STEPS = ("connect", "greeting", "login", "setup", "statement", "close")


class TimedConnection(pymysql.connections.Connection):
    """A PyMySQL connection that notes the time as its greeting is read and as its login is answered."""

    def __init__(self, *args, **kwargs):
        self.marks = []
        super().__init__(*args, **kwargs)

    def _get_server_information(self):
        self.marks.append(time.perf_counter_ns())
        super()._get_server_information()
        self.marks.append(time.perf_counter_ns())

    def _request_authentication(self):
        super()._request_authentication()
        self.marks.append(time.perf_counter_ns())


def one_connection(args):
    """One connection, returning its steps' times in nanoseconds, in the order of STEPS."""
    started = time.perf_counter_ns()
    connection = TimedConnection(
        host=args.host, port=args.port, user=args.user, password=args.password, database=args.database
    )
    set_up = time.perf_counter_ns()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        if cursor.fetchall() != ((1,),):
            raise SystemExit("SELECT 1 did not return 1")
    answered = time.perf_counter_ns()
    connection.close()
    closed = time.perf_counter_ns()
    connected, greeted, logged_in = connection.marks
    times = [started, connected, greeted, logged_in, set_up, answered, closed]
    return [later - earlier for earlier, later in zip(times, times[1:])]


def main():
    args = argument_parser(__doc__).parse_args()
    pause = args.pause_us / 1_000_000
    steps = []
    began = time.perf_counter_ns()
    for _ in range(args.iterations):
        steps.append(one_connection(args))
        if pause:
            time.sleep(pause)
    elapsed = time.perf_counter_ns() - began
    latencies = [sum(one) for one in steps]
    print(json.dumps({"elapsed_ns": elapsed, "latencies_ns": latencies, "steps_ns": steps}))


if __name__ == "__main__":
    main()
