"""The `realtime-relay bench` commands: figures measured on this machine, printed rather than asserted.

`resample` (relay.bench.resample): the resamplers' cost, delay and quality. `frames` (relay.bench.frames): how long
the largest client frame holds the event loop. `relay` (relay.bench.side_by_side): the relay and three reference
relays under the same load, side by side. Nothing here is imported by the relay itself.
"""
