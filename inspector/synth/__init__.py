"""Synthetic and real-composite conveyor footage and tile sets (numpy + OpenCV only, no torch).

- `generate_footage(out_dir, ...)`: video + calibration + labels (inspector.synth.footage)
- `make_tile_set(...)`: 224x224 training/evaluation tiles (inspector.synth.tiles)
"""

from inspector.synth.footage import SynthError, generate_footage

__all__ = ["SynthError", "generate_footage"]
