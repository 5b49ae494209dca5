"""deqfl on Flower (flwr 1.41): the same experiments on Flower's simulation and deployment
engines. Needs the `flower` extra (`pip install -e '.[flower]'`).

- `strategy.DeqflStrategy` (a `flwr.serverapp.strategy.FedAvg`): builds the messages for
  deqfl's sampled clients and turns replies into deqfl `ClientReply` objects; validation and
  fusion stay in `deqfl.fl` (one code path for every engine).
- `engine.GridEngine`: deqfl's `Engine` on a Flower `Grid` (node-id map, timeouts).
- `server_app` / `client_app`: the Flower app (`[tool.flwr.app]` in pyproject.toml).
- `simulation.run_flower_simulation`: `deqfl run --engine flower-sim`.
- `deployment.run_on_superlink`: `deqfl run --engine flower --superlink HOST:PORT`.
- `fleet`: start a SuperLink and N SuperNodes on one machine (plain or TLS), and make
  certificates and SuperNode keys (`scripts/fleet.py`, `scripts/make_certs.py`).

See docs/DEPLOYMENT.md.
"""
