"""tools/convert_checkpoint.py: --force replaces an earlier converted file, never a folder;
errors are one line."""
import os

import pytest
import torch

from backbones import EdgeViT

from .conftest import load_tool, usage_error


@pytest.fixture
def source(tmp_path):
    path = tmp_path / 'edgevit_xxs.pth'
    torch.save(EdgeViT('xxs').state_dict(), path)
    return str(path)


def test_force_never_deletes_a_folder(source, tmp_path, monkeypatch, capsys):
    project = tmp_path / 'project'
    (project / 'src').mkdir(parents=True)
    (project / 'src' / 'train.py').write_text('# a week of work')
    main = load_tool('convert_checkpoint').main
    err = usage_error(main, [source, str(project), '--force'], capsys)
    assert 'is a folder' in err and 'a folder is never replaced' in err
    monkeypatch.chdir(project)
    assert 'is a folder' in usage_error(main, [source, '.', '--force'], capsys)
    assert (project / 'src' / 'train.py').read_text() == '# a week of work'
    assert sorted(os.listdir(project)) == ['src']


def test_force_replaces_an_earlier_output(source, tmp_path):
    main = load_tool('convert_checkpoint').main
    out = tmp_path / 'converted.pth'
    assert main([source, str(out)]) == 0
    first = out.stat().st_mtime_ns
    with pytest.raises(SystemExit):
        main([source, str(out)])  # exists: --force needed
    assert main([source, str(out), '--force']) == 0 and out.stat().st_mtime_ns != first
