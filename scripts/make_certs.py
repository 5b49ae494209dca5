#!/usr/bin/env python
"""Make a self-signed CA, a SuperLink server certificate and SuperNode authentication keys:

    scripts/make_certs.py certs --host superlink.example.org --host 10.0.0.5 --nodes 4

writes certs/ca.crt, ca.key, server.pem, server.key and node-K / node-K.pub (EC P-384,
OpenSSH format) for K < 4. See docs/DEPLOYMENT.md.
"""

import sys

from deqfl.cli.fleet import main

if __name__ == "__main__":
    sys.exit(main(["certs", *sys.argv[1:]]))
