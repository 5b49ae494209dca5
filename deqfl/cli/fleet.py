"""The fleet's command line: a Flower SuperLink and N SuperNodes on one machine.

    python -m deqfl.cli.fleet certs DIR [--host NAME ...] [--nodes N]
    python -m deqfl.cli.fleet up --nodes 3 [--port 9092] [--tls DIR] [--auth]
        [--num-partitions N] [--tiers-from CONFIG.toml] [--max-seconds 3600] [--workdir DIR]

(`scripts/fleet.py` and `scripts/make_certs.py` call these; the fleet itself is
`deqfl.engines.flower.fleet`.) `up` stays in the foreground until Ctrl-C, SIGTERM or
`--max-seconds`, then stops every process it started. `--tiers-from` gives SuperNode k
the tier the experiment config assigns to client k (node config `tier`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from deqfl.engines.flower.fleet import Certs, Fleet, make_certs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet", description="A Flower SuperLink and N SuperNodes on one machine.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    certs = sub.add_parser("certs", help="make a self-signed CA, a server certificate and SuperNode keys")
    certs.add_argument("folder", type=Path)
    certs.add_argument("--host", action="append", default=[], help="extra DNS name or IP of the SuperLink (repeatable)")
    certs.add_argument("--nodes", type=int, default=0, help="SuperNode authentication key pairs to make")
    up = sub.add_parser("up", help="start a SuperLink and N SuperNodes; stop them on Ctrl-C or after --max-seconds")
    up.add_argument("--nodes", type=int, required=True)
    up.add_argument("--num-partitions", type=int, help="data.num_clients of the runs (default: --nodes)")
    up.add_argument("--port", type=int, default=9092, help="the SuperLink's API port (deqfl run --superlink HOST:PORT)")
    up.add_argument("--host", default="127.0.0.1", help="address the SuperLink listens on")
    up.add_argument("--tls", type=Path, metavar="DIR", help="folder from `certs` (ca.crt, server.pem, server.key)")
    up.add_argument("--auth", action="store_true", help="SuperNode authentication with DIR/node-K keys (needs --tls)")
    up.add_argument("--tiers-from", type=Path, metavar="CONFIG", help="experiment TOML: give each node its tier in its node config")
    up.add_argument("--max-seconds", type=float, default=3600.0)
    up.add_argument("--workdir", type=Path, default=Path("fleet"))
    args = parser.parse_args(argv)
    if args.cmd == "certs":
        made = make_certs(args.folder, args.host, args.nodes)
        print(f"CA {made.ca_cert}, server certificate {made.server_cert}, key {made.server_key}; {args.nodes} SuperNode key pairs")
        return 0
    if args.auth and not args.tls:
        parser.error("--auth needs --tls")
    tls = Certs(args.tls / "ca.crt", args.tls / "server.pem", args.tls / "server.key") if args.tls else None
    keys = [args.tls / f"node-{k}" for k in range(args.nodes)] if args.auth else None
    tiers = None
    if args.tiers_from:
        from deqfl.experiments.config import load_config  # noqa: PLC0415
        from deqfl.fl.profiles import assign_tiers  # noqa: PLC0415

        config = load_config(args.tiers_from)
        tiers = [t.name for t in assign_tiers(config.data.num_clients, config.fleet.resolved_tiers(), config.experiment.seed)]
    fleet = Fleet(args.nodes, args.workdir.resolve(), args.num_partitions, tls, keys, tiers, args.port, args.host, args.max_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with fleet:
        scheme = "TLS" if tls else "plain"
        print(f"SuperLink at {fleet.address} ({scheme}), {args.nodes} SuperNodes; logs in {fleet.workdir}", flush=True)
        print(f"  deqfl run --engine flower --superlink {fleet.address}"
              + (f" --root-certificates {tls.ca_cert}" if tls else ""), flush=True)
        try:
            stop.wait(args.max_seconds)
        except KeyboardInterrupt:
            pass
    print("fleet stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
