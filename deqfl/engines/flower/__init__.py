"""deqfl on Flower (flwr 1.41): the same experiments on Flower's simulation and deployment
engines. Needs the `flower` extra (`pip install -e '.[flower]'`).

This is engine library code: it never imports `deqfl.experiments`. What it needs from an
experiment comes in as specs (`spec.FlowerRun`, `spec.FlowerNode`) built by the layer
above; the Flower app objects (ServerApp, ClientApp) and the launchers live there
(`deqfl.experiments.flower_app`, `deqfl.experiments.engines`).

- `strategy.DeqflStrategy` (a `flwr.serverapp.strategy.FedAvg`): builds the messages for
  deqfl's sampled clients and turns replies into deqfl `ClientReply` objects; validation and
  fusion stay in `deqfl.fl` (one code path for every engine).
- `engine.GridEngine` (`engine.grid_engine`): deqfl's `Engine` on a Flower `Grid`
  (node-id map, timeouts).
- `client_app.make_client_app(load_node)`: the ClientApp's train and query handlers.
- `simulation.run_in_simulation`: a function of a Grid on Flower's simulation (Ray).
- `deployment`: start, follow and stop a run on a running SuperLink.
- `fleet`: start a SuperLink and N SuperNodes on one machine (plain or TLS), and make
  certificates and SuperNode keys (command line: `deqfl.cli.fleet`).

See docs/DEPLOYMENT.md.
"""
