"""What loading and running an export once adds to a process's peak resident memory."""
from __future__ import annotations

import json
import os
import os.path as osp
import subprocess
import sys

import torch

#: run in a fresh interpreter by :func:`peak_memory_mb`: argv = fmt, path, shape, dtype, threads
_PEAK_SCRIPT = r"""
import json, resource, sys
import torch
from backbones.export.formats import get_format
fmt, path, shape, dtype, threads = sys.argv[1:]
x = torch.zeros([int(n) for n in shape.split('x')], dtype=getattr(torch, dtype))
runner = get_format(fmt).runner
if fmt.startswith('executorch'):
    from executorch.extension.pybindings import portable_lib  # noqa: F401 (its import is not the model's)
else:
    import onnxruntime  # noqa: F401

def status_kb(field):
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))

def maxrss_kb():  # the process's peak so far: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == 'darwin' else 1)

try:  # Linux: reset the high-water mark to the present, so that only this model's peak counts
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    base, peak = status_kb('VmRSS'), lambda: status_kb('VmHWM')
except OSError:
    base, peak = maxrss_kb(), maxrss_kb
run = runner(path, int(threads), clone_outputs=False)
run(x)
peak = peak()
print(json.dumps({'base_kb': base, 'peak_kb': peak}))
"""


def peak_memory_mb(fmt: str, path: str, example: torch.Tensor, threads: int = 1) -> float:
    """What loading ``path`` and running it once on an input like ``example`` adds to a
    process's peak resident memory, in MB: measured in a fresh interpreter (the runtime
    imported first, so its own libraries do not count), as an app pays it on a phone. It
    includes the memory plan, the weights and the runtime's workspaces (XNNPACK's)."""
    import backbones
    root = osp.dirname(osp.dirname(osp.abspath(backbones.__file__)))  # where the package is imported from
    shape = 'x'.join(str(n) for n in example.shape)
    dtype = str(example.dtype).replace('torch.', '')
    done = subprocess.run([sys.executable, '-c', _PEAK_SCRIPT, fmt, path, shape, dtype, str(threads)],
                          capture_output=True, text=True, cwd=root,
                          env={**os.environ, 'PYTHONPATH': root + os.pathsep + os.environ.get('PYTHONPATH', '')})
    if done.returncode != 0:
        raise RuntimeError(f'measuring the memory of {path} failed:\n{done.stderr[-2000:]}')
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return (result['peak_kb'] - result['base_kb']) * 1024 / 1e6
