"""Grape-line spider inspector: tiled VGG16 + feature activation maps, bunch decisions, ejector link."""

__version__ = "0.1.0"
