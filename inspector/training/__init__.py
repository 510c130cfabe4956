"""PyTorch side of the inspector: VGG16 definition, ONNX export, training data, training loop.

Needs the ``train`` extra (torch, onnx, h5py). The daemon never imports this package.
"""
