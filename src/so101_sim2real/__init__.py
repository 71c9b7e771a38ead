"""so101-sim2real: run a sim-trained DrQ-v2 pixel policy on a real SO-101 arm."""

__version__ = "0.1.0"
