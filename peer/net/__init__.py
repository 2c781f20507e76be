"""The honest peer daemon: crypto, wire codec and validation, round store, transport, run file.

It drives the engine's state machine through the exchange interface and knows the round
structure only through `peer.engine.schedule`.
"""
