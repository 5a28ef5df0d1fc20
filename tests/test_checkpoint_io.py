"""Issue 9: nothing lost, nothing run that should not be, no silent wrong weights.

Loading never runs code (every entry point: init_cfg, tools/test.py, mmengine's loaders after
``import backbones``, --resume; torch's weights-only unpickler and the older-torch fallback);
writes are atomic (a process killed mid-write leaves the previous file whole); checkpoints of
another arch or model are refused unless partial loading is asked for; EMA weights are
preferred and named.
"""
import os
import queue
import random
import runpy
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from backbones import EdgeViT
from backbones.checkpoints import io as cio
from backbones.checkpoints.io import CheckpointFileError, UnsafeCheckpointError, load_local_checkpoint
from backbones.checkpoints.loading import (CheckpointMismatchError, find_state_dict, load_model_checkpoint,
                                           load_pretrained)
from backbones.fileio import atomic_path, atomic_write, save_torch

from .conftest import ROOT
from .safety_helpers import STALLED, toy_config
from .test_checkpoints import TINY_EDGEVIT, _float

RETINANET = str(ROOT / 'configs' / 'detection' / 'retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py')


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
    monkeypatch.setattr(cio, 'USE_TORCH_SAFE_GLOBALS', request.param)
    return request.param


@pytest.fixture(scope='module')
def tiny_retinanet(tmp_path_factory):
    """RetinaNet EdgeViT-XXS on 2 built-in validation images of 64x64, and its state dict."""
    from backbones.demo.configs import detection_config
    from backbones.demo.dataset import make_dataset
    from backbones.runtime.models import build_model_from_config
    tmp = tmp_path_factory.mktemp('safety')
    roots = make_dataset(str(tmp / 'data'), num_train=2, num_val=2, size=(64, 64), seed=1)
    cfg = detection_config(RETINANET, roots['coco'], 64, iters=2, batch_size=2, lr=1e-3)
    for key in ('train_dataloader', 'test_dataloader'):
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    cfg.pop('work_dir', None)
    path = tmp / 'tiny_retinanet.py'
    cfg.dump(str(path))
    model, _ = build_model_from_config(str(path))
    return str(path), {k: v.clone() for k, v in model.state_dict().items()}


def _tool(name):
    return runpy.run_path(str(ROOT / 'tools' / f'{name}.py'), run_name=f'edgeformers_tool_{name}')['main']


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
    assert _tool('test')([tiny_retinanet[0], str(path), '--work-dir', str(tmp_path / 'w')]) == 2
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


# ---------------------------------------------------------------------------- atomic writes
def _kill_during_write(code: str, match: str, timeout: float = 300) -> None:
    """Run ``code`` in a child whose first binary write to a path containing ``match`` stalls
    half-way (tests/safety_helpers.py), and SIGKILL it there."""
    prelude = (f'import sys; sys.path.insert(0, {str(ROOT)!r})\n'
               f'from tests.safety_helpers import stall_writes; stall_writes({match!r})\n')
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


def test_killed_atomic_write_keeps_previous_file(tmp_path):
    target = tmp_path / 'big.pth'
    torch.save({'w': torch.ones(3)}, target)
    _kill_during_write(f'import torch\nfrom backbones.fileio import save_torch\n'
                       f'save_torch({{"w": torch.zeros(2 ** 20)}}, {str(target)!r})\n', match='big')
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.ones(3))


def test_killed_convert_force_keeps_previous_output(tmp_path):
    from .conftest import COMPACT_REFERENCE
    src = COMPACT_REFERENCE / 'edgevit_tiny.pt'
    dst = tmp_path / 'converted.pth'
    assert _tool('convert_checkpoint')([str(src), str(dst)]) == 0
    before = torch.load(dst, weights_only=True)['state_dict']
    _kill_during_write(f'import runpy\nmain = runpy.run_path({str(ROOT / "tools" / "convert_checkpoint.py")!r}, '
                       f'run_name="x")["main"]\nmain([{str(src)!r}, {str(dst)!r}, "--force"])\n', match='converted')
    after = load_local_checkpoint(str(dst))['state_dict']
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_killed_training_checkpoint_leaves_no_broken_file(tmp_path):
    """SIGKILL while the Runner saves iter_2: no iter_2.pth under its name; iter_1.pth loads,
    and --resume (auto) continues from it."""
    from backbones.runtime.engine import build_runner
    work = tmp_path / 'w'
    _kill_during_write(f'from tests.safety_helpers import toy_config\nfrom backbones.runtime.engine import build_runner\n'
                       f'build_runner(toy_config({str(work)!r})).train()\n', match='iter_2')
    assert not (work / 'iter_2.pth').exists() and (work / 'last_checkpoint').read_text().endswith('iter_1.pth')
    assert load_local_checkpoint(str(work / 'iter_1.pth'))['meta']['iter'] == 1
    runner = build_runner(toy_config(str(work), resume=True))
    runner.train()
    assert runner.iter == 2 and load_local_checkpoint(str(work / 'iter_2.pth'))['meta']['iter'] == 2


def test_atomic_write_and_folders(tmp_path):
    path = tmp_path / 'out.json'
    path.write_text('old')
    with pytest.raises(ZeroDivisionError):
        with atomic_write(str(path), 'w') as f:
            f.write('new')
            1 / 0
    assert path.read_text() == 'old' and os.listdir(tmp_path) == ['out.json']  # no temporary left behind
    # a package folder (Core ML's .mlpackage) replaces the previous one whole
    package = tmp_path / 'model.mlpackage'
    for version in ('1', '2'):
        with atomic_path(str(package)) as tmp:
            assert tmp.endswith('.mlpackage') and os.path.dirname(tmp) == str(tmp_path)
            os.makedirs(os.path.join(tmp, 'Data'))
            with open(os.path.join(tmp, 'Data', 'weights'), 'w') as f:
                f.write(version)
    assert (package / 'Data' / 'weights').read_text() == '2' and sorted(os.listdir(tmp_path)) == [
        'model.mlpackage', 'out.json']
    # through a symbolic link, the link's target is replaced and the link kept
    real, link = tmp_path / 'real.txt', tmp_path / 'link.txt'
    real.write_text('a')
    link.symlink_to(real)
    with atomic_write(str(link), 'w') as f:
        f.write('b')
    assert link.is_symlink() and real.read_text() == 'b'


def test_failed_export_keeps_previous_file(tmp_path):
    pytest.importorskip('onnxscript')
    from backbones.export.formats import write_onnx

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError('export fails')

    path = tmp_path / 'model.onnx'
    path.write_bytes(b'previous export')
    with pytest.raises(Exception):
        write_onnx(Broken(), torch.rand(1, 3, 8, 8), str(path))
    assert path.read_bytes() == b'previous export' and os.listdir(tmp_path) == ['model.onnx']


@pytest.mark.parametrize('link', ['symlink', 'hardlink'])
def test_convert_refuses_dst_that_is_src(link, tmp_path, capsys):
    from .conftest import COMPACT_REFERENCE
    src = tmp_path / 'src.pt'
    src.write_bytes((COMPACT_REFERENCE / 'edgevit_tiny.pt').read_bytes())
    dst = tmp_path / 'dst.pt'
    (os.symlink if link == 'symlink' else os.link)(src, dst)
    with pytest.raises(SystemExit):
        _tool('convert_checkpoint')([str(src), str(dst), '--force'])
    assert 'same file' in capsys.readouterr().err
    assert src.read_bytes() == (COMPACT_REFERENCE / 'edgevit_tiny.pt').read_bytes()


# ---------------------------------------------------------------------------- wrong weights are refused
@pytest.mark.parametrize('weights,model', [('xs', 's'), ('s', 'xs')])
def test_other_depth_refused_naming_the_arch(weights, model, tmp_path):
    path = tmp_path / f'{weights}.pth'
    torch.save(EdgeViT(weights).state_dict(), path)
    kind = 'missing' if weights == 'xs' else 'unexpected'
    with pytest.raises(CheckpointMismatchError, match=rf"stage 2: .*\({kind}: 3, 4\).*EdgeViT\(arch='{weights}'\)"):
        load_pretrained(EdgeViT(model), str(path))
    # asked for explicitly, a partial load goes ahead and lists what was not loaded
    report = load_pretrained(EdgeViT(model), str(path), partial=True)
    assert (report['missing'] if kind == 'missing' else report['unexpected'])
    assert any(k.startswith('stages.2.blocks.3.') for k in report['missing'] + report['unexpected'])


def test_ema_weights_preferred_and_named(compact_reference, tmp_path):
    raw = _float(compact_reference('edgevit_tiny.pt')['state_dict'])
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in raw.items()}
    key = 'patch_embed1.proj.weight'
    for wrapper in ({'model': raw, 'model_ema': ema}, {'state_dict': raw, 'state_dict_ema': ema},
                    {'state_dict': raw, 'ema_state_dict': ema}):
        sd, where = find_state_dict(wrapper)
        assert sd is ema and 'EMA' in where
    # mmengine's EMAHook: 'state_dict' already holds the EMA weights, 'ema_state_dict' the raw ones
    mmengine_ema = {'state_dict': ema, 'ema_state_dict': {'steps': torch.tensor(5),
                                                          **{'module.' + k: v for k, v in raw.items()}}}
    sd, where = find_state_dict(mmengine_ema)
    assert sd is ema and 'EMAHook' in where
    torch.save({'model': raw, 'model_ema': ema}, tmp_path / 'ema.pth')
    model = EdgeViT(TINY_EDGEVIT)
    load_pretrained(model, str(tmp_path / 'ema.pth'))
    assert torch.equal(model.stages[0].downsample.proj.weight, ema[key])


def test_tools_test_is_strict_with_a_partial_option(tiny_retinanet, tmp_path, capsys):
    config, state = tiny_retinanet
    other = {k: v for k, v in state.items() if not k.startswith('bbox_head.')}
    other['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(3, 3)
    torch.save({'state_dict': other}, tmp_path / 'other.pth')
    main = _tool('test')
    assert main([config, str(tmp_path / 'other.pth'), '--work-dir', str(tmp_path / 'w')]) == 2
    err = capsys.readouterr().err
    assert 'bbox_head' in err and 'roi_head' in err and '--partial' in err
    assert main([config, str(tmp_path / 'other.pth'), '--work-dir', str(tmp_path / 'w'), '--partial']) == 0
    # a checkpoint whose backbone is another arch is refused, naming it
    xs = {k: v for k, v in state.items() if not k.startswith('backbone.')}
    xs.update({'backbone.' + k: v for k, v in EdgeViT('xs').state_dict().items()})
    torch.save(xs, tmp_path / 'xs.pth')
    assert main([config, str(tmp_path / 'xs.pth'), '--work-dir', str(tmp_path / 'w')]) == 2
    assert "EdgeViT(arch='xs')" in capsys.readouterr().err


def test_export_checkpoint_is_strict_with_a_partial_option(tiny_retinanet, tmp_path, capsys):
    from backbones.export.targets import build_target
    from backbones.runtime.models import build_model_from_config
    config, state = tiny_retinanet
    partial = {k: v for k, v in state.items() if not k.startswith('neck.')}
    torch.save(partial, tmp_path / 'partial.pth')
    assert _tool('export')([config, '--size', '64', '64', '--checkpoint', str(tmp_path / 'partial.pth'),
                            '--formats', 'onnx', '--out-dir', str(tmp_path)]) == 2
    assert 'neck' in capsys.readouterr().err and not list(tmp_path.glob('*.onnx'))
    target = build_target(config, (64, 64), str(tmp_path / 'partial.pth'), partial=True)
    loaded = target.full_model.state_dict()
    assert torch.equal(loaded['bbox_head.retina_cls.weight'], state['bbox_head.retina_cls.weight'])
    # whole checkpoints of this model load strictly; a backbone checkpoint by variant name too
    torch.save({'state_dict': state}, tmp_path / 'full.pth')
    assert load_model_checkpoint(build_model_from_config(config)[0], str(tmp_path / 'full.pth')) == dict(
        missing=[], unexpected=[], mismatched=[])
    torch.save(EdgeViT('xs').state_dict(), tmp_path / 'xs.pth')
    with pytest.raises(CheckpointMismatchError, match=r"EdgeViT\(arch='xs'\)"):
        build_target('edgevit_xxs', (64, 64), str(tmp_path / 'xs.pth'))
