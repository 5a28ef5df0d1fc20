"""Measuring exported models: latency beside MobileNetV2 and ResNet-18 (:mod:`.latency`,
timed as :mod:`.timing` does it, plotted by :mod:`.plot`), end-to-end detectors and
segmentors beside their raw networks (:mod:`.end_to_end`), peak memory (:mod:`.memory`),
eager PyTorch beside timm (:mod:`.eager`), per-operator profiles of ExecuTorch
(:mod:`.operators`) and ONNX Runtime (:mod:`.onnx_profile`) exports, and the machine they ran
on (:mod:`.machine`)."""
