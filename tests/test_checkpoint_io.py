"""backbones.checkpoints.io: reading a checkpoint never runs code, through every entry point
(init_cfg, tools/test.py, mmengine's loaders after ``import backbones``, --resume; torch's
weights-only unpickler and the older-torch fallback); broken files are named; mmengine's own
training checkpoints load and resume; a training checkpoint killed mid-write leaves no broken
file."""
import os
import random

import numpy as np
import pytest
import torch

from backbones import EdgeViT
from backbones.checkpoints import io as cio
from backbones.checkpoints.io import CheckpointFileError, UnsafeCheckpointError, load_local_checkpoint
from backbones.checkpoints.loading import load_pretrained
from backbones.fileio import save_torch

from .conftest import load_tool
from .test_checkpoint_loading import TINY_EDGEVIT
from .training_helpers import kill_during_write, toy_config

#: whether this torch has the safe_globals the first loading path needs (the package's own probe)
TORCH_SAFE_GLOBALS = cio._torch_takes_named_safe_globals()



# ---------------------------------------------------------------------------- fixtures
class _Opens:
    """Unpickling calls open(path, 'w'): the file appears if the pickle is run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')


class _Shell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f'touch {self.path}',)


@pytest.fixture(params=['open', 'os.system'])
def evil(request, tmp_path):
    """A checkpoint with real weights whose pickle also creates ``marker`` when unpickled."""
    marker = tmp_path / 'pwned'
    payload = _Opens(marker) if request.param == 'open' else _Shell(marker)
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': EdgeViT(TINY_EDGEVIT).state_dict(), 'meta': {'note': payload}}, path)
    return path, marker, ('io.open' if request.param == 'open' else 'posix.system')


@pytest.fixture(params=[True, False], ids=['torch-safe-globals', 'allowlist-unpickler'])
def loader_path(request, monkeypatch):
    """Both ways of loading: torch's weights-only unpickler with the allow-list (torch >= 2.6)
    and the restricted unpickler older torch uses."""
    if request.param and not TORCH_SAFE_GLOBALS:
        pytest.skip(f'torch.serialization.safe_globals taking (object, name) pairs needs torch >= 2.6; '
                    f'torch {torch.__version__} loads through the allow-list unpickler')
    monkeypatch.setattr(cio, 'USE_TORCH_SAFE_GLOBALS', request.param)
    return request.param


# ---------------------------------------------------------------------------- loading never runs code
def test_refused_via_init_cfg_and_mmengine_loaders(evil, loader_path):
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import CheckpointLoader
    path, marker, name = evil
    model = EdgeViT(TINY_EDGEVIT, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    attempts = [model.init_weights, lambda: load_checkpoint(EdgeViT(TINY_EDGEVIT), str(path)),
                lambda: CheckpointLoader.load_checkpoint(str(path)), lambda: load_local_checkpoint(str(path))]
    for attempt in attempts:
        with pytest.raises(UnsafeCheckpointError) as err:
            attempt()
        message = str(err.value)
        assert str(path) in message and name in message and 'Nothing in it was run' in message
        assert 'torch.save(model.state_dict()' in message and 'convert_checkpoint.py' in message
        assert not marker.exists()


def test_only_history_buffers_getattr_is_allowed(tmp_path, loader_path):
    """The getattr mmengine's HistoryBuffer needs is the only one allowed."""
    from mmengine.logging.history_buffer import HistoryBuffer

    class Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    torch.save({'x': Sneaky()}, tmp_path / 'getattr.pth')
    with pytest.raises(UnsafeCheckpointError, match=r"getattr\(.*'__init__'\)"):
        load_local_checkpoint(str(tmp_path / 'getattr.pth'))


def test_refused_via_tools_test(evil, tiny_retinanet, tmp_path, capsys):
    path, marker, name = evil
    assert load_tool('test').main([tiny_retinanet[0], str(path), '--work-dir', str(tmp_path / 'w')]) == 2
    assert name in capsys.readouterr().err and not marker.exists()


def test_refused_via_resume(evil, tmp_path):
    from backbones.runtime.engine import build_runner
    path, marker, name = evil
    cfg = toy_config(str(tmp_path / 'w'), resume=True, load_from=str(path))
    with pytest.raises(UnsafeCheckpointError, match=name):
        build_runner(cfg).train()
    assert not marker.exists()


@pytest.mark.parametrize('kind', ['empty', 'text', 'truncated'])
def test_broken_files_named(kind, tmp_path, loader_path):
    path = tmp_path / f'{kind}.pth'
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'text':
        path.write_text('<html>404 Not Found</html>\n')
    else:
        torch.save(EdgeViT(TINY_EDGEVIT).state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    expected = {'empty': 'empty', 'text': 'not a PyTorch checkpoint', 'truncated': 'truncated'}[kind]
    with pytest.raises(CheckpointFileError, match=expected) as err:
        load_pretrained(EdgeViT(TINY_EDGEVIT), str(path))
    assert str(path) in str(err.value) and 'again' in str(err.value)


def test_mmengine_training_checkpoint_loads_and_resumes(tmp_path, loader_path):
    """A Runner's own checkpoint (message hub, history buffers, numpy scalars, optimizer and
    scheduler states, the config text) names only allow-listed globals, loads both ways, and
    resumes; random states as a resume hook stores them load too."""
    from backbones.runtime.engine import build_runner
    work = tmp_path / 'w'
    build_runner(toy_config(str(work))).train()
    names = cio.checkpoint_globals(str(work / 'iter_2.pth'))
    assert {'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr', 'numpy.dtype'} <= names
    assert names <= set(cio.allowed_globals())
    checkpoint = load_local_checkpoint(str(work / 'iter_2.pth'))
    assert checkpoint['meta']['iter'] == 2 and 'train/loss' in checkpoint['message_hub']['log_scalars']
    runner = build_runner(toy_config(str(work), max_iters=3, resume=True))
    runner.train()
    assert runner.iter == 3 and (work / 'iter_3.pth').exists()
    states = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate(),
                  scalars=[np.float64(0.5), np.int64(3), np.bool_(True)])
    save_torch({'state_dict': {}, 'rng_state': states}, str(tmp_path / 'rng.pth'))
    back = load_local_checkpoint(str(tmp_path / 'rng.pth'))['rng_state']
    assert back['numpy'][0] == 'MT19937' and np.array_equal(back['numpy'][1], states['numpy'][1])
    assert back['python'] == states['python'] and torch.equal(back['torch'], states['torch'])


def test_killed_training_checkpoint_leaves_no_broken_file(tmp_path):
    """SIGKILL while the Runner saves iter_2: no iter_2.pth under its name; iter_1.pth loads,
    and --resume (auto) continues from it."""
    from backbones.runtime.engine import build_runner
    work = tmp_path / 'w'
    kill_during_write(f'from tests.training_helpers import toy_config\nfrom backbones.runtime.engine import build_runner\n'
                       f'build_runner(toy_config({str(work)!r})).train()\n', match='iter_2')
    assert not (work / 'iter_2.pth').exists() and (work / 'last_checkpoint').read_text().endswith('iter_1.pth')
    assert load_local_checkpoint(str(work / 'iter_1.pth'))['meta']['iter'] == 1
    runner = build_runner(toy_config(str(work), resume=True))
    runner.train()
    assert runner.iter == 2 and load_local_checkpoint(str(work / 'iter_2.pth'))['meta']['iter'] == 2


