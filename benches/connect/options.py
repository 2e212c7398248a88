"""The options connect.py and steps.py share: where to connect, as whom, how many connections, the pause after each."""

import argparse


def argument_parser(description):
    """A parser of the shared options, for a script described by `description`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--pause-us", type=int, default=0)
    return parser
