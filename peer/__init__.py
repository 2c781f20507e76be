"""DecByzPG peers, in four wings whose imports point one way: cli -> lab -> adversary -> net -> engine.

- `peer.engine`: the learning core: configuration, policy, sampling, estimators, aggregators,
  agreement, the round schedule and the sans-IO per-peer state machine.  No networking.
- `peer.net`: the honest daemon: signatures, the wire codec and validator, the round store,
  the gRPC transport and the run file.
- `peer.lab`: experiments: the in-process runner, results, sweeps, the resilience matrix,
  traces, reports, plots, benchmarks and the loopback cluster launcher.
- `peer.cli`: the `decbyzpg` command, one module per command group.

The top-level `adversary` package (Byzantine behaviour) sits between lab and net.
docs/ARCHITECTURE.md draws the layers; `lint-imports` (in the test suite) keeps them true.
"""
