"""Measurements of the running system: `inspector bench` (speed against baselines) and `inspector soak`."""
