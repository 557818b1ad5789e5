"""`python -m sims.toggle --port N`: the Toggle GraphQL simulator on its own."""

import argparse

from sims.toggle.server import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sims.toggle",
                                     description="Toggle GraphQL API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--account-id", type=int)
    parser.add_argument("--credits-max", type=int)
    parser.add_argument("--credits-refill-per-second", type=float)
    args = parser.parse_args(argv)
    config = {name: value for name, value in vars(args).items()
              if name not in ("host", "port") and value is not None}
    run(args.host, args.port, **config)


if __name__ == "__main__":
    main()
