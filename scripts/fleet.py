#!/usr/bin/env python
"""Start a Flower SuperLink and N SuperNodes on this machine (plain or TLS); see
docs/DEPLOYMENT.md. Example:

    scripts/fleet.py up --nodes 4 --port 9092                  # plain
    scripts/fleet.py up --nodes 4 --port 9092 --tls certs --auth  # TLS + SuperNode auth
"""

import sys

from deqfl.cli.fleet import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if sys.argv[1:2] == ["up"] else ["up", *sys.argv[1:]]))
