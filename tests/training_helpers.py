"""Helpers of the tests that kill a process mid-write, importable by the subprocesses they
kill: a toy mmengine training setup (a real Runner writing real training checkpoints in a
second), a write that stops half-way, and :func:`kill_during_write`, which kills a child
process there deterministically."""
import builtins
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from torch.utils.data import Dataset

#: printed on stdout by a write that has stopped half-way (see :func:`stall_writes`)
STALLED = 'EDGEFORMERS-WRITE-STALLED'


@MODELS.register_module(name='EdgeformersToyModel', force=True)
class ToyModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.bn(self.linear(inputs))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(out, labels))
        return out


@DATASETS.register_module(name='EdgeformersToyDataset', force=True)
class ToyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'))

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g), labels=torch.tensor(i % 2))


def toy_config(work_dir: str, max_iters: int = 2, **kwargs):
    """An mmengine config training :class:`ToyModel` with a CheckpointHook every iteration."""
    from mmengine.config import Config
    cfg = dict(
        model=dict(type='EdgeformersToyModel'), work_dir=work_dir, experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(dataset=dict(type='EdgeformersToyDataset'),
                              sampler=dict(type='DefaultSampler', shuffle=True), batch_size=4, num_workers=0,
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=max_iters)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), log_level='WARNING', env_cfg=dict(dist_cfg=dict(backend='gloo')))
    cfg.update(kwargs)
    return Config(cfg)


class _StallingFile:
    """A file whose first write writes half the bytes, says so on stdout, and hangs."""

    def __init__(self, f) -> None:
        self._f = f

    def write(self, data) -> int:
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()
        os.fsync(self._f.fileno())
        print(STALLED, flush=True)
        time.sleep(600)
        raise RuntimeError('not killed')

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def stall_writes(match: str) -> None:
    """From now on in this process, a file opened for binary writing whose path contains
    ``match`` stalls half-way through its first write (:class:`_StallingFile`)."""
    real_open = builtins.open

    def open_(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and match in os.fspath(file) and 'b' in mode \
                and ('w' in mode or 'x' in mode):
            return _StallingFile(f)
        return f

    builtins.open = open_


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kill_during_write(code: str, match: str, timeout: float = 300) -> None:
    """Run ``code`` in a child whose first binary write to a path containing ``match`` stalls
    half-way (:func:`stall_writes`), and SIGKILL it there."""
    prelude = (f'import sys; sys.path.insert(0, {ROOT!r})\n'
               f'from tests.training_helpers import stall_writes; stall_writes({match!r})\n')
    child = subprocess.Popen([sys.executable, '-c', prelude + code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=str(ROOT))
    lines: 'queue.Queue[str]' = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout] + [lines.put('')], daemon=True).start()
    threading.Thread(target=lambda: child.stderr.read(), daemon=True).start()  # never let stderr fill up
    try:
        while True:
            line = lines.get(timeout=timeout)
            if STALLED in line:
                break
            assert line, f'the child ended (rc {child.wait()}) without a write to {match!r}'
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL


from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402


@HOOKS.register_module(name='EdgeformersPoisonHook', force=True)
class PoisonHook(Hook):
    """Turns the model's weights to NaN after iteration ``at_iter`` (a diverged run)."""

    def __init__(self, at_iter: int) -> None:
        self.at_iter = at_iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at_iter:
            with torch.no_grad():
                for p in runner.model.parameters():
                    p.fill_(float('nan'))


@HOOKS.register_module(name='EdgeformersFailingSaveHook', force=True)
class FailingSaveHook(Hook):
    """The checkpoint of iteration ``at_iter`` cannot be written (a full disk, say)."""

    def __init__(self, at_iter: int) -> None:
        self.at_iter = at_iter

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if checkpoint['meta']['iter'] == self.at_iter:
            raise OSError(28, 'No space left on device')
