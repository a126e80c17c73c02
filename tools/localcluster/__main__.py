"""Command line: `python -m localcluster up|down|status`."""

from __future__ import annotations

import argparse
import sys

from localcluster import cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the local cluster, or reuse the running one")
    commands.add_parser("down", help="stop every process of the local cluster")
    commands.add_parser("status", help="show what runs; exit code 0 when healthy")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster.up()
        elif args.command == "down":
            cluster.down()
        else:
            return 0 if cluster.status() else 1
    except cluster.ClusterError as error:
        print(f"localcluster: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
