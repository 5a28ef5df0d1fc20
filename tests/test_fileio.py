"""backbones.fileio: every file appears whole under its name or not at all; a process killed
mid-write leaves the previous file as it was."""
import os

import pytest
import torch

from backbones.checkpoints.io import load_local_checkpoint
from backbones.fileio import atomic_path, atomic_write

from .conftest import ROOT, load_tool
from .training_helpers import kill_during_write
def test_killed_atomic_write_keeps_previous_file(tmp_path):
    target = tmp_path / 'big.pth'
    torch.save({'w': torch.ones(3)}, target)
    kill_during_write(f'import torch\nfrom backbones.fileio import save_torch\n'
                       f'save_torch({{"w": torch.zeros(2 ** 20)}}, {str(target)!r})\n', match='big')
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.ones(3))


def test_killed_convert_force_keeps_previous_output(tmp_path):
    from .conftest import COMPACT_REFERENCE
    src = COMPACT_REFERENCE / 'edgevit_tiny.pt'
    dst = tmp_path / 'converted.pth'
    assert load_tool('convert_checkpoint').main([str(src), str(dst)]) == 0
    before = torch.load(dst, weights_only=True)['state_dict']
    kill_during_write(f'import runpy\nmain = runpy.run_path({str(ROOT / "tools" / "convert_checkpoint.py")!r}, '
                       f'run_name="x")["main"]\nmain([{str(src)!r}, {str(dst)!r}, "--force"])\n', match='converted')
    after = load_local_checkpoint(str(dst))['state_dict']
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


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


def test_a_folder_is_never_replaced_by_a_file(tmp_path):
    """Whatever a user keeps under the output's name (a project, a dataset) survives: the
    write is refused before anything is deleted, and no temporary file is left."""
    from backbones.fileio import ReplaceRefusedError
    keep = tmp_path / 'out.pth'
    keep.mkdir()
    (keep / 'notes.txt').write_text('mine')
    with pytest.raises(ReplaceRefusedError, match='nothing was deleted'):
        with atomic_write(str(keep)) as f:
            f.write(b'weights')
    with pytest.raises(ReplaceRefusedError, match='not an earlier output'):
        with atomic_path(str(keep)) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'weights')
    assert (keep / 'notes.txt').read_text() == 'mine'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.pth']


def test_a_package_replaces_only_an_earlier_package(tmp_path):
    """A folder output (a Core ML .mlpackage) replaces an earlier one of the same layout, and
    nothing else: not a folder of other contents, not a file."""
    from backbones.fileio import ReplaceRefusedError

    def package(path, version):
        os.makedirs(os.path.join(path, 'Data'), exist_ok=True)
        with open(os.path.join(path, 'Manifest.json'), 'w') as f:
            f.write(version)

    earlier = tmp_path / 'model.mlpackage'
    package(str(earlier), 'v1')
    with atomic_path(str(earlier)) as tmp:
        package(tmp, 'v2')
    assert (earlier / 'Manifest.json').read_text() == 'v2'
    project = tmp_path / 'project.mlpackage'
    (project / 'src').mkdir(parents=True)
    (project / 'src' / 'main.py').write_text('print(1)')
    with pytest.raises(ReplaceRefusedError):
        with atomic_path(str(project)) as tmp:
            package(tmp, 'v3')
    assert (project / 'src' / 'main.py').read_text() == 'print(1)'
    single = tmp_path / 'single.mlpackage'
    single.write_text('a file')
    with pytest.raises(ReplaceRefusedError):
        with atomic_path(str(single)) as tmp:
            package(tmp, 'v3')
    assert single.read_text() == 'a file'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.mlpackage', 'project.mlpackage', 'single.mlpackage']
