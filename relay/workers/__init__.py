"""Several relay processes behind one port: how many, how they are started and stopped, and their metrics."""
