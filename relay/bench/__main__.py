"""``python -m relay.bench WHAT ...`` is ``realtime-relay bench WHAT ...``."""

import sys

from relay.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
