"""DrQ-v2 policy runtime: checkpoint formats, networks, frame stack, state."""
