"""`python -m sims`: run the Treazure and Engage simulators (see sims.server.run)."""

import argparse

from sims.server import run

# CLI flags that map one-to-one onto SimConfig settings (omitted flags keep the defaults).
_CONFIG_FLAGS = {
    "engage_rate_limit": int,
    "client_id": str,
    "client_secret": str,
    "api_key": str,
    "loyalty_id": str,
    "definition_id": int,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sims", description="Treazure and Engage HTTP simulators"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--treazure-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--engage-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--toggle-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--atreemo-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--contlo-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--seed-contacts", type=int, default=0, metavar="N")
    parser.add_argument(
        "--seed-changed",
        type=int,
        metavar="M",
        help="of the seeded contacts, how many changed in the last hour (default: all)",
    )
    for name, kind in _CONFIG_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind)
    args = parser.parse_args(argv)
    config = {name: getattr(args, name) for name in _CONFIG_FLAGS}
    run(
        args.host,
        args.treazure_port,
        args.engage_port,
        args.seed_contacts,
        args.seed_changed,
        toggle_port=args.toggle_port,
        atreemo_port=args.atreemo_port,
        contlo_port=args.contlo_port,
        **{name: value for name, value in config.items() if value is not None},
    )


if __name__ == "__main__":
    main()
