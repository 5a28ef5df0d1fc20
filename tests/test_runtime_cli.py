"""backbones.runtime.cli: how every tool ends on an error (one line, the exit status saying
which kind, --debug for the traceback), and the arguments the tools share."""
import os

import pytest

from backbones.runtime.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USER_ERROR, RunFailed, UserError, run_tool

from .conftest import load_tool, usage_error


def _raising(err):
    def main(argv):
        raise err
    return main


@pytest.mark.parametrize('err,status,line', [
    (UserError('--out x: give a .pkl file'), EXIT_USER_ERROR, 'error: --out x: give a .pkl file'),
    (PermissionError(13, 'Permission denied', '/data/coco'), EXIT_USER_ERROR, 'error: /data/coco: Permission denied'),
    (FileNotFoundError("config file 'a.py' does not exist"), EXIT_USER_ERROR,
     "error: config file 'a.py' does not exist"),
    (KeyError('EdgeVit is not in the mmdet::model registry'), EXIT_USER_ERROR,
     'error: EdgeVit is not in the mmdet::model registry'),
    (TypeError("EdgeViT.__init__() got an unexpected keyword argument\n'arhc'"), EXIT_USER_ERROR,
     "error: EdgeViT.__init__() got an unexpected keyword argument 'arhc'"),
    (RunFailed('training diverged: ...'), EXIT_FAILED, 'error: training diverged: ...'),
    (RuntimeError('a bug'), EXIT_FAILED, 'error: RuntimeError: a bug (an unexpected failure; --debug shows the '
                                         'traceback)'),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, 'interrupted'),
])
def test_errors_end_as_one_line_with_their_kind_of_status(err, status, line, capsys, monkeypatch):
    monkeypatch.delenv('EDGEFORMERS_DEBUG', raising=False)
    assert run_tool(_raising(err), []) == status
    assert capsys.readouterr().err == line + '\n'


def test_debug_shows_the_traceback(monkeypatch):
    with pytest.raises(UserError):
        run_tool(_raising(UserError('x')), ['config.py', '--debug'])
    monkeypatch.setenv('EDGEFORMERS_DEBUG', '1')
    with pytest.raises(RuntimeError):
        run_tool(_raising(RuntimeError('x')), [])


def test_benchmark_thread_counts_and_windows_are_checked(capsys):
    main = load_tool('benchmark').main
    assert '--threads' in usage_error(main, ['--threads', '0'], capsys)
    for seconds in ('0', 'nan', 'inf'):
        assert 'must be a positive number' in usage_error(main, ['--seconds', seconds], capsys)
    assert '--torch-threads -1' in usage_error(main, ['--torch-threads', '-1'], capsys)
    assert 'an option is KEY=VALUE' in usage_error(main, ['--end-to-end', '--cfg-options', 'rpn'], capsys)


@pytest.mark.parametrize('env,argv,local_rank', [
    ({}, ['--local-rank', '3'], '3'),              # torch.distributed.launch passes the flag
    ({'LOCAL_RANK': '1'}, [], '1'),                # torchrun sets the variable, which wins
    ({}, [], '0'),
])
def test_runner_arguments_pass_the_local_rank_on(env, argv, local_rank, monkeypatch):
    import argparse
    from backbones.runtime.cli import add_runner_arguments, parse_runner_args
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    add_runner_arguments(parser, 'checkpoints')
    args = parse_runner_args(parser, argv)
    assert os.environ['LOCAL_RANK'] == local_rank and args.launcher == 'none'
