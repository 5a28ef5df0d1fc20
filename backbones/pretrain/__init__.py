"""ImageNet-1K pretraining in mmpretrain 1.2, as the families' official training ran it.

``import backbones.pretrain`` needs mmpretrain (``pip install -e ".[pretrain]"``) and registers:

* every registered backbone family in mmpretrain's ``MODELS`` (and each family registered
  later, see :func:`backbones.registry.add_registry_module`);
* :class:`~.head.EdgeformersClsHead` (BatchNorm -> global average pool -> Linear, with an
  optional distillation head) and :class:`~.distill.DistillingClassifier` (hard or soft
  distillation from a frozen timm teacher) in mmpretrain's ``MODELS``;
* :class:`~.optim.AGCOptimWrapper` and :class:`~.optim.AmpAGCOptimWrapper` (adaptive gradient
  clipping) in mmengine's ``OPTIM_WRAPPERS``;
* :class:`~.scheduler.TimmCosineLR` (timm's cosine schedule stepped per epoch as the official
  ``main.py`` steps it) in mmengine's ``PARAM_SCHEDULERS``.

The configs in ``configs/classification/`` import it through ``custom_imports``.
"""
import importlib

try:
    importlib.import_module('mmpretrain')
except ModuleNotFoundError as err:  # only a missing mmpretrain; a broken one raises as it is
    if err.name and err.name.split('.')[0] == 'mmpretrain':
        raise ModuleNotFoundError(
            'backbones.pretrain needs mmpretrain 1.2, which is not installed; install the extra with '
            'pip install -e ".[pretrain]" (or pip install "mmpretrain>=1.2,<1.3")', name='mmpretrain') from None
    raise

from ..registry import add_registry_module
from .distill import DistillingClassifier, FrozenTeacher, build_teacher, distillation_loss
from .head import EdgeformersClsHead
from .optim import AGCOptimWrapper, AmpAGCOptimWrapper
from .scheduler import TimmCosineLR, timm_cosine_lr

add_registry_module('mmpretrain.registry')

__all__ = ['EdgeformersClsHead', 'DistillingClassifier', 'FrozenTeacher', 'build_teacher', 'distillation_loss',
           'AGCOptimWrapper', 'AmpAGCOptimWrapper', 'TimmCosineLR', 'timm_cosine_lr']
