"""A simulated OpenAI Realtime (GA) server: the offline demo model, and the upstream every test talks to.

`model` is the I/O-free protocol core; `server` puts it on a WebSocket and adds the misbehaviour switches of
`FakeOptions` (refuse, stall, drop, garbage) so that failure handling can be tested for real.
"""

from relay.fake.model import SimulatedModel
from relay.fake.options import FakeOptions
from relay.fake.server import ConnectionRecord, FakeRealtimeServer, run_fake_upstream

__all__ = ["ConnectionRecord", "FakeOptions", "FakeRealtimeServer", "SimulatedModel", "run_fake_upstream"]
