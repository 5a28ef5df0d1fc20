"""Exact resume: an interrupted and resumed run reaches the weights of an uninterrupted one.

mmengine's Runner seeds the random generators once, at start. On ``resume`` it restores the
weights, optimizer, schedulers, message hub and iteration, and :class:`IterBasedTrainLoop`
re-reads the batches already trained on to put the data iterator back in place; but it does
not restore the generators' states, so drop path, dropout, RoI sampling and the data
augmentation of the main process draw other numbers than the uninterrupted run did.

:class:`RandomStateHook` (added to every run by :func:`backbones.runtime.engine.build_runner`) fills
the gaps:

* every checkpoint stores the states of torch's (and CUDA's) default generator, numpy's and
  Python's ``random`` under ``checkpoint['rng_state']``, as tensors and plain Python values
  so a restricted (``weights_only``) unpickler reads them;
* a resumed run puts them back at the point where the uninterrupted run stood: for the
  iteration loop after mmengine has re-read the trained batches (which draws augmentation
  numbers again when the pipeline runs in the main process) and before the next batch; for
  the epoch loop before the epoch's data iterator starts (after it, when persistent workers
  keep their state, since a fresh iterator draws its worker base seed from torch);
* a validation inside training leaves the training generators as they were, so a run that
  resumes after a validation continues from the same state;
* data-loading workers that persist across epochs are reseeded at the start of every epoch
  from (seed, epoch, rank, worker), so a run resumed at epoch ``e`` augments epoch ``e`` as
  the uninterrupted run did (the iteration loop's workers replay their history instead);
* :func:`resume_seed` gives the resumed run the seed of the run it continues (mmengine draws
  a random one when the config sets none, and builds the sampler and the workers' seeds
  from it before it reads the checkpoint).

Not covered: several processes (only rank 0's states are saved), and a checkpoint saved in
the middle of an epoch of an epoch-based loop (mmengine restarts that epoch).

Which checkpoint a run resumes (:func:`choose_resume_checkpoint`): the newest of the work dir
that reads as a whole, passing over a truncated one with a line that says so; ``--resume PATH``
is checked to be a training checkpoint (:func:`check_resume_checkpoint`) of this model
(:func:`check_resume_matches`), each refusal naming what the file is.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import random
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

#: the key of the generators' states in a checkpoint
CHECKPOINT_KEY = 'rng_state'
HOOK_TYPE = 'RandomStateHook'


def get_rng_state() -> Dict[str, Any]:
    """The states of torch's, CUDA's, numpy's and Python's default generators, as tensors
    and plain Python values."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=(str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
               int(np_state[3]), float(np_state[4])),
        python=(int(py_version), torch.tensor(py_internal, dtype=torch.int64), py_gauss))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Put back states taken by :func:`get_rng_state`."""
    torch.set_rng_state(state['torch'].cpu())
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, np.asarray(keys.cpu() if torch.is_tensor(keys) else keys, dtype=np.uint32), int(pos),
                         int(has_gauss), float(gauss)))
    version, internal, gauss = state['python']
    internal = internal.tolist() if torch.is_tensor(internal) else list(internal)
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if state.get('cuda') is not None and torch.cuda.is_available():
        cuda = list(state['cuda'])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            print_log(f'the checkpoint holds the random states of {len(cuda)} CUDA devices, this machine has '
                      f'{torch.cuda.device_count()}: CUDA random states not restored', logger='current',
                      level=logging.WARNING)


def _worker_seed(seed: int, epoch: int, rank: int, worker: int) -> int:
    return int(np.random.SeedSequence([seed % 2**63, epoch, rank, worker]).generate_state(1)[0])


class EpochSeededPipeline:
    """A dataset's pipeline that reseeds a worker's generators when the epoch changes.

    ``epoch`` is a one-element tensor in shared memory, set by the main process before each
    epoch's data iterator starts; in the main process (no workers) nothing is reseeded.
    """

    def __init__(self, pipeline, seed: int, rank: int, epoch: torch.Tensor):
        self.pipeline = pipeline
        self.seed, self.rank, self.epoch = seed, rank, epoch
        self._seeded_epoch = None

    def __call__(self, results):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            epoch = int(self.epoch[0])
            if epoch != self._seeded_epoch:
                seed = _worker_seed(self.seed, epoch, self.rank, info.id)
                np.random.seed(seed % 2**32)
                random.seed(seed)
                torch.manual_seed(seed)
                self._seeded_epoch = epoch
        return self.pipeline(results)

    def __getattr__(self, name):
        if name == 'pipeline':  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self) -> str:
        return f'EpochSeededPipeline({self.pipeline!r})'


def _datasets_with_pipeline(dataset, depth: int = 0):
    """The datasets holding a ``pipeline`` inside ``dataset`` (through mmengine's wrappers)."""
    if depth > 8 or dataset is None:
        return []
    if hasattr(dataset, 'pipeline') and callable(dataset.pipeline):
        return [dataset]
    found = []
    for child in [getattr(dataset, 'dataset', None)] + list(getattr(dataset, 'datasets', None) or []):
        found += _datasets_with_pipeline(child, depth + 1)
    return found


class _RestoreBeforeNext:
    """The iteration loop's data iterator: puts the generators back just before the batch
    after the ``skip`` re-read ones is fetched."""

    def __init__(self, iterator, skip: int, restore):
        self._iterator, self._skip, self._restore = iterator, skip, restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._restore is not None and self._skip == 0:
            restore, self._restore = self._restore, None
            restore()
        elif self._skip > 0:
            self._skip -= 1
        return next(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Saves the random generators' states in every checkpoint and restores them on resume
    at the point the uninterrupted run stood; keeps validation out of the training's random
    streams; reseeds persistent data workers per epoch. See :mod:`backbones.runtime.resume`."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._loaded: Optional[Dict[str, Any]] = None   # the states of the checkpoint being resumed
        self._loaded_meta: Dict[str, Any] = {}
        self._before_val: Optional[Dict[str, Any]] = None
        self._restore_at: Optional[str] = None          # 'epoch' or 'iter': where the pending restore happens
        self._pending = None
        self._epoch_tensor: Optional[torch.Tensor] = None

    # --- saving -------------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # a checkpoint saved during a validation (save_best) keeps the training's states
        checkpoint[CHECKPOINT_KEY] = self._before_val if self._before_val is not None else get_rng_state()

    def before_val(self, runner) -> None:
        self._before_val = get_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None

    # --- resuming -----------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # also called for ``load_from`` (fine-tuning): before_train only restores when the
        # loop stands where the checkpoint was saved
        self._loaded = checkpoint.get(CHECKPOINT_KEY)
        self._loaded_meta = dict(checkpoint.get('meta') or {})
        if self._loaded is None and getattr(runner, '_resume', False):
            print_log('the checkpoint holds no random states (written before RandomStateHook): the resumed '
                      'run draws other random numbers than an uninterrupted one', logger='current',
                      level=logging.WARNING)

    def before_train(self, runner) -> None:
        from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            self._reseed_persistent_workers(runner, loop)
        state, self._loaded = self._loaded, None
        if state is None:
            return
        meta = self._loaded_meta
        if loop.iter == 0 or meta.get('iter') != loop.iter or meta.get('epoch') != loop.epoch:
            return  # weights loaded with load_from, not a resume
        restore = lambda: set_rng_state(state)  # noqa: E731
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _RestoreBeforeNext(loop.dataloader_iterator, loop.iter, restore)
        elif isinstance(loop, EpochBasedTrainLoop):
            if loop.iter != loop.epoch * len(loop.dataloader):
                print_log(f'resuming from a checkpoint saved in the middle of epoch {loop.epoch + 1}: mmengine '
                          'repeats that epoch from its start, so the run is not the uninterrupted one; save '
                          'checkpoints of epoch-based runs at the end of epochs (CheckpointHook by_epoch=True)',
                          logger='current', level=logging.WARNING)
            self._pending, self._restore_at = restore, ('iter' if self._persistent(loop.dataloader) else 'epoch')
        else:
            restore()

    def before_train_epoch(self, runner) -> None:
        if self._epoch_tensor is not None:
            self._epoch_tensor[0] = runner.epoch
        if self._restore_at == 'epoch':
            self._restore_at = None
            self._pending()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._restore_at == 'iter':
            self._restore_at = None
            self._pending()

    # --- data workers -------------------------------------------------------------------
    @staticmethod
    def _persistent(loader) -> bool:
        return bool(getattr(loader, 'persistent_workers', False)) and getattr(loader, 'num_workers', 0) > 0

    def _reseed_persistent_workers(self, runner, loop) -> None:
        loader = loop.dataloader
        if not self._persistent(loader) or getattr(loader, '_iterator', None) is not None:
            return
        datasets = _datasets_with_pipeline(loader.dataset)
        if not datasets:
            print_log('RandomStateHook: the training dataset has no pipeline to reseed; persistent workers '
                      'keep their random states across epochs, so a resumed run augments differently',
                      logger='current', level=logging.WARNING)
            return
        from mmengine.dist import get_rank
        self._epoch_tensor = torch.zeros(1, dtype=torch.int64).share_memory_()
        seed = runner.seed if runner.seed is not None else 0
        for dataset in datasets:
            if not isinstance(dataset.pipeline, EpochSeededPipeline):
                dataset.pipeline = EpochSeededPipeline(dataset.pipeline, seed, get_rank(), self._epoch_tensor)


def add_random_state_hook(cfg) -> None:
    """Add :class:`RandomStateHook` to ``cfg.custom_hooks`` unless it is there."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and h.get('type') in (HOOK_TYPE, RandomStateHook) for h in hooks):
        hooks.append(dict(type=HOOK_TYPE))
    cfg.custom_hooks = hooks


def checkpoint_to_resume(cfg) -> Optional[str]:
    """The checkpoint a config with ``resume`` continues from, or None."""
    if not cfg.get('resume'):
        return None
    if cfg.get('load_from'):
        return cfg.load_from
    from mmengine.runner import find_latest_checkpoint
    return find_latest_checkpoint(cfg.work_dir) if cfg.get('work_dir') and osp.isdir(cfg.work_dir) else None


def resume_seed(cfg) -> Optional[int]:
    """Give a resumed run the seed of the run it continues (``cfg.randomness.seed``).

    mmengine builds the sampler and the data workers' seeds from the runner's seed before it
    reads the checkpoint, and draws a random seed when the config sets none: the resumed run
    would read other batches. Returns the seed set, or None when there is nothing to resume.
    """
    path = checkpoint_to_resume(cfg)
    if path is None or not osp.isfile(path):
        return None
    from ..checkpoints.io import load_local_checkpoint
    seed = (load_local_checkpoint(path, map_location='cpu').get('meta') or {}).get('seed')
    if seed is None:
        return None
    randomness = dict(cfg.get('randomness') or {})
    if randomness.get('seed') is not None and randomness['seed'] != seed:
        print_log(f'resuming {path}: it was trained with seed {seed}, the config says {randomness["seed"]}; '
                  f'continuing with {seed}', logger='current', level=logging.WARNING)
    randomness['seed'] = int(seed)
    cfg.randomness = randomness
    return int(seed)


# ---------------------------------------------------------------------------- which checkpoint to resume
_NUMBERED = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def training_checkpoints(work_dir: str) -> List[str]:
    """The training checkpoints of a work dir, newest first: the one mmengine's
    ``last_checkpoint`` names, then ``iter_N.pth`` / ``epoch_N.pth`` by descending N."""
    found: List[str] = []
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            found.append(osp.abspath(named))
    numbered = []
    for name in os.listdir(work_dir) if osp.isdir(work_dir) else []:
        m = _NUMBERED.match(name)
        if m:
            numbered.append((int(m.group(2)), osp.abspath(osp.join(work_dir, name))))
    found += [path for _, path in sorted(numbered, reverse=True) if path not in found]
    return found


def describe_checkpoint(checkpoint: Any) -> Optional[str]:
    """None for an mmengine training checkpoint (weights, optimizer and loop state); else what
    the file is instead, in words."""
    if not isinstance(checkpoint, dict):
        return f'not a checkpoint dict (a {type(checkpoint).__name__})'
    meta = checkpoint.get('meta')
    if isinstance(checkpoint.get('state_dict'), dict) and isinstance(meta, dict) and 'iter' in meta \
            and 'epoch' in meta and 'optimizer' in checkpoint:
        return None
    from ..checkpoints.layouts import DETECTOR, detect_layout, get_layout
    from ..checkpoints.loading import extract_state_dict
    try:
        state_dict = extract_state_dict(checkpoint, source='the file')
    except ValueError:
        return 'a file with no weights in it'
    layout = detect_layout(state_dict)
    classifier = getattr(get_layout(layout), 'classification', False)
    if layout == DETECTOR or (not classifier and any(k.startswith('backbone.') for k in state_dict)):
        return ('a whole-model checkpoint without training state (no optimizer or iteration): to start a new '
                'training from its weights set load_from (--cfg-options load_from=PATH); to evaluate it use '
                'tools/test.py')
    return (f'a backbone or classifier checkpoint (layout: {layout}), not a training checkpoint: give it to the '
            "backbone as init_cfg=dict(type='Pretrained', checkpoint=PATH) to start a new training from it")


def choose_resume_checkpoint(work_dir: str) -> Tuple[Optional[str], List[str]]:
    """The newest training checkpoint of ``work_dir`` that reads as a whole, and the lines
    saying which newer ones were passed over and why (truncated, unreadable, not training
    checkpoints). ``(None, lines)`` when none is usable."""
    from ..checkpoints.io import CheckpointFileError, load_local_checkpoint
    skipped: List[str] = []
    for path in training_checkpoints(work_dir):
        try:
            problem = describe_checkpoint(load_local_checkpoint(path, map_location='cpu'))
        except CheckpointFileError as err:
            problem = str(err)
        if problem is None:
            return path, skipped
        skipped.append(f'--resume: passing over {path}: {problem}')
    return None, skipped


def check_resume_checkpoint(path: str) -> Dict[str, Any]:
    """Read ``path`` for ``--resume PATH``; raise a :class:`~backbones.runtime.cli.UserError`
    naming what it is when it is not a readable training checkpoint, and offering the newest
    usable one beside it. Returns the checkpoint."""
    from ..checkpoints.io import CheckpointFileError, load_local_checkpoint
    from .cli import UserError
    try:
        checkpoint = load_local_checkpoint(path, map_location='cpu')
        problem = describe_checkpoint(checkpoint)
    except CheckpointFileError as err:
        checkpoint, problem = None, str(err)
    if problem is None:
        return checkpoint
    other, _ = choose_resume_checkpoint(osp.dirname(osp.abspath(path)))
    offer = f'; the newest training checkpoint beside it that reads is {other}: --resume {other}' if other else ''
    raise UserError(f'--resume {path}: {problem}{offer}')


def check_resume_matches(checkpoint: Dict[str, Any], path: str, model) -> None:
    """Raise a :class:`~backbones.runtime.cli.UserError` when the training checkpoint's weights
    are not this model's (another model or arch): resuming would fail later in the optimizer's
    state, or train a mix."""
    from mmengine.model import is_model_wrapper

    from ..checkpoints.loading import check_values
    from .cli import UserError
    target = model.module if is_model_wrapper(model) else model
    own = {k: v.shape for k, v in target.state_dict().items()}
    theirs = {k: v.shape for k, v in checkpoint['state_dict'].items() if hasattr(v, 'shape')}
    check_values(checkpoint['state_dict'], f'--resume {path}')
    missing = [k for k in own if k not in theirs and not k.endswith('num_batches_tracked')]
    extra = [k for k in theirs if k not in own]
    shapes = [k for k in own if k in theirs and own[k] != theirs[k]]
    if missing or extra or shapes:
        written = (checkpoint.get('meta') or {}).get('experiment_name')
        parts = [f'{len(missing)} of this model\'s weights are not in it' if missing else '',
                 f'{len(extra)} of its weights are not in this model' if extra else '',
                 f'{len(shapes)} shapes differ (e.g. {shapes[0]})' if shapes else '']
        raise UserError(f'--resume {path}: a training checkpoint of another model ({"; ".join(p for p in parts if p)}'
                        + (f'; written by the run {written}' if written else '') + '): resume it with the config it '
                        'was trained with, or start this config anew')
