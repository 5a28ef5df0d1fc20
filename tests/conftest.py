import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
#: the main job's default detector and segmentor (tools/demo.py)
DEMO_DET_CONFIG = str(CONFIGS / 'detection' / 'mask-rcnn_efficientformerv2-s0_fpn_8xb2-1x_coco.py')
DEMO_SEG_CONFIG = str(CONFIGS / 'segmentation' / 'fpn_edgevit-xxs_8xb4-40k_ade20k-512x512.py')
#: small official references shipped with the tests (made by the papers' code, tiny architectures)
COMPACT_REFERENCE = ROOT / 'tests' / 'data' / 'reference'
#: the papers' figures; ../shared/PAPERS.md when present (the maintained copy), else the shipped one
PAPERS_MD = ROOT / 'tests' / 'data' / 'PAPERS.md'
#: (major, minor) of the installed torch
TORCH_VERSION = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2])
#: top-level modules that only an optional extra installs (pyproject.toml), and that extra
EXTRA_MODULES = {'executorch': 'export', 'onnx': 'export', 'onnxruntime': 'export', 'onnxscript': 'export',
                 'coremltools': 'export', 'litert_torch': 'tflite'}


def shared_reference_dir():
    """$EDGEFORMERS_REFERENCE when set, else ../shared/reference beside the checkout; None when
    absent (setting the variable to an empty folder runs the suite as a user's clone would)."""
    env = os.environ.get('EDGEFORMERS_REFERENCE')
    candidates = [Path(env)] if env else [ROOT.parent / 'shared' / 'reference', ROOT / 'shared' / 'reference']
    for c in candidates:
        if (c / 'README.md').exists():
            return c
    return None


def _loader(folder: Path):
    cache = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = torch.load(folder / name, map_location='cpu', weights_only=True)
        return cache[name]

    load.folder = folder
    return load


@pytest.fixture(scope='session')
def compact_reference():
    """The compact official references in tests/data/reference (always present)."""
    return _loader(COMPACT_REFERENCE)


@pytest.fixture(scope='session')
def reference():
    """The full-size official references in ../shared/reference; tests that need them skip
    when the folder is absent (a user's clone has only the compact ones)."""
    folder = shared_reference_dir()
    if folder is None:
        pytest.skip('the full-size official references are not here: they live in ../shared/reference '
                    '(or set EDGEFORMERS_REFERENCE); the compact ones in tests/data/reference still run')
    return _loader(folder)


@pytest.fixture(scope='session')
def papers_text() -> str:
    shared = shared_reference_dir()
    path = shared.parent / 'PAPERS.md' if shared is not None and (shared.parent / 'PAPERS.md').exists() else PAPERS_MD
    return path.read_text()


# at most 2 threads per test, and no more threads than cores across pytest-xdist's workers
_THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(_THREADS)
    yield


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|"""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def load_tool(name: str):
    """``tools/NAME.py`` as a module, as its command line runs it."""
    import sys
    tools = str(ROOT / 'tools')
    if tools not in sys.path:
        sys.path.insert(0, tools)
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def usage_error(main, argv, capsys) -> str:
    """Run a tool's main; it must stop with argparse's usage error; returns the message."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def randomise_bn_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Every BatchNorm's running mean and variance drawn at random (a fresh model's zeros and
    ones would let a wrong statistic go unnoticed)."""
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.normal_(0, 0.2)
            elif name.endswith('running_var'):
                b.uniform_(0.5, 2.0)
    return model


def in_process_loaders(cfg, keys=('train_dataloader', 'test_dataloader')):
    """The config's data loaders loading in the test's own process (no worker processes)."""
    for key in keys:
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    return cfg


@pytest.fixture(scope='module')
def tiny_retinanet(tmp_path_factory):
    """RetinaNet EdgeViT-XXS on 2 built-in validation images of 64x64, and its state dict."""
    from backbones.demo.configs import detection_config
    from backbones.demo.dataset import make_dataset
    from backbones.runtime.models import build_model_from_config
    tmp = tmp_path_factory.mktemp('safety')
    roots = make_dataset(str(tmp / 'data'), num_train=2, num_val=2, size=(64, 64), seed=1)
    cfg = detection_config(str(CONFIGS / "detection" / "retinanet_edgevit-xxs_fpn_8xb2-1x_coco.py"), roots['coco'], 64, iters=2, batch_size=2, lr=1e-3)
    in_process_loaders(cfg)
    cfg.pop('work_dir', None)
    path = tmp / 'tiny_retinanet.py'
    cfg.dump(str(path))
    model, _ = build_model_from_config(str(path))
    return str(path), {k: v.clone() for k, v in model.state_dict().items()}


def paper_table(text: str, title: str) -> dict:
    """The Markdown table under the PAPERS.md heading that starts with ``title``, as
    ``{row label: {column: cell}}``; a label's '(≈)' mark is dropped."""
    section = text.split(f'## {title}', 1)[1].split('\n## ', 1)[0]
    rows = [line.strip().strip('|').split('|') for line in section.splitlines() if line.startswith('|')]
    header = [c.strip() for c in rows[0]]
    table = {}
    for cells in rows[2:]:
        cells = [c.strip() for c in cells]
        table[cells[0].replace('(≈)', '').strip()] = dict(zip(header[1:], cells[1:]))
    return table


#: PAPERS.md's downstream tables by config task, and its column for each figure of the package
PAPER_TABLES = {'retinanet': ('COCO val2017, RetinaNet 1x', dict(params='params (M)', box_ap='AP')),
                'mask-rcnn': ('COCO val2017, Mask R-CNN 1x', dict(params='params (M)', box_ap='box AP',
                                                                  mask_ap='mask AP')),
                'fpn': ('ADE20K val, Semantic FPN', dict(params='params (M)', gflops='GFLOPs', miou='mIoU'))}


def paper_row(text: str, config_name: str) -> dict:
    """The published figures of a downstream config, read from its PAPERS.md table:
    ``{'params': '13.1', 'box_ap': '38.7', ...}`` (only the numbers the paper gives)."""
    from backbones.registry import variant_of_config
    task = config_name.split('_', 1)[0]
    title, columns = PAPER_TABLES[task]
    row = paper_table(text, title).get(variant_of_config(config_name).label, {})
    return {key: row[col] for key, col in columns.items() if re.fullmatch(r'[\d.]+', row.get(col, ''))}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that imports a module of an optional extra which is not installed, or that the
    package refuses with MissingExtra (an export this torch cannot make), is skipped, not
    failed: the [export] extra requires torch 2.13 (ExecuTorch 1.4.1), so an environment with
    another torch runs the rest of the suite without it. Only a top-level module that is absent
    altogether counts; a missing submodule of an installed package still fails."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None:
        return
    from backbones.export.formats import MissingExtra
    if call.excinfo.errisinstance(MissingExtra):  # the package's own "this extra is not usable here"
        reason = str(call.excinfo.value)
    elif call.excinfo.errisinstance(ModuleNotFoundError):
        top = (call.excinfo.value.name or '').partition('.')[0]
        extra = EXTRA_MODULES.get(top)
        if extra is None or importlib.util.find_spec(top) is not None:
            return
        reason = (f'the [{extra}] extra is not installed (no module named {top!r})'
                  + ('; the extra requires torch 2.13' if extra == 'export' else ''))
    else:
        return
    path, line, _ = item.reportinfo()
    report.outcome = 'skipped'
    report.longrepr = (str(path), (line or 0) + 1, reason)
