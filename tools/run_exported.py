#!/usr/bin/env python
"""Run an end-to-end export (.onnx or .pte) on images, the way an app does.

    python tools/run_exported.py work_dirs/export/retinanet_800x1344.onnx photo.jpg --out preds
    python tools/run_exported.py work_dirs/export/fpn_512x512.pte a.jpg b.png --threads 2

The command line of backbones/export/runner.py, which imports only the standard library,
numpy and Pillow (torch for .pte files): loaded by its path, so neither torch nor the package
is imported for .onnx models.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _torchfree import load_runner  # noqa: E402

if __name__ == '__main__':
    sys.exit(load_runner().main())
