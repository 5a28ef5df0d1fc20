"""Reading checkpoint files without running code, and the loader registered with mmengine.

A checkpoint is a pickle, and unpickling can call any function the file names. Every file is
read through an allow-list: tensors and their storages (what ``torch.load(weights_only=True)``
accepts), plus exactly what mmengine's own training checkpoints hold (:data:`EXTRA_GLOBALS`:
numpy arrays, scalars and dtypes, mmengine's ``HistoryBuffer`` and the ``getattr`` that
pickles its statistics methods, restricted to those methods). A file naming anything else
is refused with :class:`UnsafeCheckpointError`, naming the file and the globals, before any
of them is called; an empty, truncated or non-checkpoint file raises
:class:`CheckpointFileError` naming the file.

How, by torch version: with ``torch.serialization.safe_globals`` taking ``(object, name)``
pairs (torch >= 2.6), torch's own weights-only unpickler loads with the allow-list added;
on older torch (2.0 - 2.5) ``torch.load(weights_only=False, pickle_module=...)`` with
:data:`ALLOWLIST_PICKLE`, whose unpickler resolves only allow-listed globals and, like
torch's, calls, instantiates and builds only allow-listed objects.

``import backbones`` registers :func:`load_local_checkpoint` as mmengine's loader for local
paths (:mod:`backbones.runtime.mmengine_setup`), so every local ``load_checkpoint`` in the
process reads through the allow-list.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import types
import zipfile
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Set

import torch

#: how a refused checkpoint can be made loadable
REFUSED_HINT = ('If the file is yours and trusted, re-save only its weights (torch.save(model.state_dict(), '
                'path)) or convert it with tools/convert_checkpoint.py, which writes tensors only.')

#: the statistics methods mmengine's HistoryBuffer pickles by name (``getattr(HistoryBuffer, 'mean')``)
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


class CheckpointFileError(RuntimeError):
    """A file that cannot be read as a checkpoint (empty, truncated, not a checkpoint)."""


class UnsafeCheckpointError(CheckpointFileError, pickle.UnpicklingError):
    """A checkpoint whose pickle names a global outside the allow-list; nothing was called."""

    def __init__(self, message: str, globals_: Iterable[str] = (), reason: Optional[str] = None) -> None:
        super().__init__(message)
        self.globals = sorted(set(globals_))
        self.reason = reason  # why, when more than "a global outside the allow-list"


def _refused(path: str, names: Iterable[str], reason: Optional[str] = None) -> UnsafeCheckpointError:
    names = sorted(set(names))
    why = reason or (f'its pickle names {", ".join(names)}, which a checkpoint of tensors or an mmengine '
                     'training checkpoint never needs (loading it could run code)')
    return UnsafeCheckpointError(f'{path}: refused to load: {why}. Nothing in it was run. {REFUSED_HINT}', names,
                                 reason)


# ---------------------------------------------------------------------------- the allow-list
def history_buffer_getattr(obj: Any, name: str) -> Any:
    """The only ``getattr`` a checkpoint may call: one of HistoryBuffer's statistics methods
    (mmengine pickles ``HistoryBuffer._statistics_methods`` as ``getattr(HistoryBuffer, name)``)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    reason = (f'it calls getattr({obj!r}, {name!r}); the only getattr a checkpoint may call is one of '
              f'mmengine HistoryBuffer\'s statistics methods {HISTORY_BUFFER_METHODS}')
    raise UnsafeCheckpointError(reason, ['builtins.getattr'], reason)


def _numpy_globals() -> Dict[str, Any]:
    import numpy as np
    try:  # numpy >= 2 pickles numpy._core.multiarray; numpy 1.x numpy.core.multiarray
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    from codecs import encode  # how protocol 2 pickles bytes (array data); torch < 2.1 does not list it
    found: Dict[str, Any] = {'numpy.dtype': np.dtype, 'numpy.ndarray': np.ndarray, '_codecs.encode': encode}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        found[f'{module}._reconstruct'] = multiarray._reconstruct
        found[f'{module}.scalar'] = multiarray.scalar
    return found


def _numpy_dtype_classes() -> Set[type]:
    """The classes of dtype instances (``numpy.dtypes.Float64DType`` ...): pickles rebuild a
    dtype by calling ``numpy.dtype`` and then set its state, which needs the instance's class."""
    import numpy as np
    classes = {np.dtype}
    for code in np.typecodes['All'] + 'OV':
        try:
            classes.add(type(np.dtype(code)))
        except TypeError:
            pass
    return classes


def _extra_globals() -> Dict[str, Any]:
    """:data:`EXTRA_GLOBALS`, resolved: dotted name as a pickle names it -> object."""
    found = _numpy_globals()
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:  # without mmengine there are no mmengine checkpoints to read
        return found
    found['mmengine.logging.history_buffer.HistoryBuffer'] = HistoryBuffer
    found['builtins.getattr'] = history_buffer_getattr
    return found


#: what an mmengine training checkpoint (Runner.save_checkpoint: meta with the config text,
#: message hub, optimizer, schedulers, random states) needs beyond tensors, found by listing the
#: globals of checkpoints the Runner writes; ``builtins.getattr`` resolves to
#: :func:`history_buffer_getattr`, not to ``getattr``
EXTRA_GLOBALS = ('_codecs.encode', 'numpy.dtype', 'numpy.ndarray', 'numpy.core.multiarray._reconstruct',
                 'numpy._core.multiarray._reconstruct', 'numpy.core.multiarray.scalar',
                 'numpy._core.multiarray.scalar', 'mmengine.logging.history_buffer.HistoryBuffer',
                 'builtins.getattr')

_ALLOWED: Optional[Dict[str, Any]] = None


def allowed_globals() -> Dict[str, Any]:
    """Every global a checkpoint may name: torch's own weights-only list (tensors, storages,
    dtypes, ``OrderedDict``, ``torch.Size`` ...) and :data:`EXTRA_GLOBALS`."""
    global _ALLOWED
    if _ALLOWED is None:
        from torch._weights_only_unpickler import _get_allowed_globals
        found = dict(_get_allowed_globals())
        found.update(_extra_globals())
        _ALLOWED = found
    return _ALLOWED


def _safe_globals_entries() -> List[Any]:
    entries: List[Any] = [(obj, name) for name, obj in _extra_globals().items()]
    entries.extend(_numpy_dtype_classes())
    return entries


def _torch_takes_named_safe_globals() -> bool:
    """Whether ``torch.serialization.safe_globals`` takes ``(object, 'module.name')`` pairs
    (torch >= 2.6), which the allow-list needs (aliases, the restricted getattr)."""
    if not hasattr(torch.serialization, 'safe_globals'):
        return False
    try:
        from torch._weights_only_unpickler import _get_user_allowed_globals
        probe = object()
        with torch.serialization.safe_globals([(probe, 'edgeformers.probe')]):
            return _get_user_allowed_globals().get('edgeformers.probe') is probe
    except Exception:  # noqa: BLE001 (an older torch without this private API: use the fallback)
        return False


#: True: torch's weights-only unpickler with the allow-list added; False: :data:`ALLOWLIST_PICKLE`
USE_TORCH_SAFE_GLOBALS = _torch_takes_named_safe_globals()


# ---------------------------------------------------------------------------- older torch
class AllowListUnpickler(pickle._Unpickler):  # the Python unpickler: its opcodes can be overridden
    """An unpickler that resolves only allow-listed globals (without importing anything) and,
    like torch's weights-only unpickler, calls (REDUCE), instantiates (NEWOBJ) and builds
    (BUILD) only allow-listed objects."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        allowed = allowed_globals()
        self._allowed = allowed
        self._callables: FrozenSet[int] = frozenset(id(v) for v in allowed.values())
        self._buildable = tuple({v for v in allowed.values() if isinstance(v, type)} | _numpy_dtype_classes()
                                | {torch.Tensor, torch.nn.Parameter})

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        full = f'{module}.{name}'
        if full not in self._allowed:
            raise UnsafeCheckpointError(f'refused global {full}', [full])
        return self._allowed[full]

    def _check_callable(self, obj: Any, what: str) -> None:
        if id(obj) not in self._callables:
            raise UnsafeCheckpointError(f'refused to {what} {obj!r}: not an allow-listed global',
                                        [getattr(obj, '__qualname__', repr(obj))])

    def load_reduce(self) -> None:
        self._check_callable(self.stack[-2], 'call')
        super().load_reduce()

    def load_newobj(self) -> None:
        self._check_callable(self.stack[-2], 'instantiate')
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._check_callable(self.stack[-3], 'instantiate')
        super().load_newobj_ex()

    def load_build(self) -> None:
        inst = self.stack[-2]
        if type(inst) not in self._buildable:
            raise UnsafeCheckpointError(f'refused to set the state of a {type(inst).__qualname__}',
                                        [type(inst).__qualname__])
        super().load_build()

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST / OBJ (protocols 0 and 1)
        self._check_callable(klass, 'instantiate')
        super()._instantiate(klass, args)

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def _allowlist_load(file: Any, **kwargs: Any) -> Any:
    return AllowListUnpickler(file, **kwargs).load()


#: a ``pickle_module`` for ``torch.load`` (torch's own unpickler subclasses its ``Unpickler``)
ALLOWLIST_PICKLE = types.ModuleType('edgeformers_allowlist_pickle')
ALLOWLIST_PICKLE.Unpickler = AllowListUnpickler
ALLOWLIST_PICKLE.load = _allowlist_load
ALLOWLIST_PICKLE.UnpicklingError = pickle.UnpicklingError


# ---------------------------------------------------------------------------- diagnosis
def _python3_name(module: str, name: str):
    """The Python 3 name of a protocol-2 global (``__builtin__.getattr`` -> ``builtins.getattr``)."""
    import _compat_pickle
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _globals_in_pickle(data: bytes) -> Set[str]:
    """Globals a pickle stream names, read with :mod:`pickletools` (nothing is unpickled)."""
    found: Set[str] = set()
    memo: Dict[Any, Any] = {}
    recent: List[Any] = []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ('GLOBAL', 'INST'):
            found.add('.'.join(_python3_name(*arg.split(' ', 1))))
        elif op.name == 'STACK_GLOBAL' and len(recent) >= 2:
            found.add('.'.join(_python3_name(str(recent[-2]), str(recent[-1]))))
        elif isinstance(arg, str) and ('UNICODE' in op.name or 'STRING' in op.name):
            recent.append(arg)
        elif op.name == 'MEMOIZE':
            memo[len(memo)] = recent[-1] if recent else None
        elif op.name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
            memo[arg] = recent[-1] if recent else None
        elif op.name in ('GET', 'BINGET', 'LONG_BINGET'):
            recent.append(memo.get(arg))
        elif op.name == 'STOP':
            break
    return found


def checkpoint_globals(path: str) -> Set[str]:
    """The globals the pickle of a torch checkpoint file names (zip or legacy format)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith('.pkl')]
            return set().union(*(_globals_in_pickle(archive.read(n)) for n in names)) if names else set()
    with open(path, 'rb') as f:  # legacy format: a few pickles, then raw storages
        data = f.read()
    found: Set[str] = set()
    stream = io.BytesIO(data)
    for _ in range(4):
        start = stream.tell()
        try:
            for op, _, pos in pickletools.genops(stream):
                if op.name == 'STOP':
                    break
        except Exception:  # noqa: BLE001 (past the pickles)
            break
        found |= _globals_in_pickle(data[start:stream.tell()])
    return found


def _short(err: BaseException, limit: int = 300) -> str:
    text = ' '.join(str(err).split())
    return text if len(text) <= limit else text[:limit] + ' ...'


def _unreadable(path: str, err: BaseException) -> CheckpointFileError:
    return CheckpointFileError(
        f'{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {_short(err)}). A truncated or corrupt file '
        '(an interrupted download, copy or write) or a file of another kind; download, convert or save it again.')


# ---------------------------------------------------------------------------- loading
def load_local_checkpoint(filename: str, map_location: Any = None) -> Any:
    """Load a local checkpoint through the allow-list (see the module's docstring).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle names a global outside the allow-list.
        CheckpointFileError: an empty, truncated or non-checkpoint file.
    """
    path = os.path.expanduser(str(filename))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} can not be found.')
    if os.path.getsize(path) == 0:
        raise CheckpointFileError(f'{path}: the file is empty (0 bytes), e.g. an interrupted download or write; '
                                  'download, convert or save it again.')
    if not zipfile.is_zipfile(path):
        with open(path, 'rb') as f:
            head = f.read(8)
        if head.startswith(b'PK'):
            raise CheckpointFileError(f'{path}: a truncated or corrupt checkpoint (a zip archive without its '
                                      'directory, e.g. an interrupted download, copy or write); download, convert '
                                      'or save it again.')
        if not head.startswith(b'\x80'):  # neither torch's zip format nor its legacy pickles
            raise CheckpointFileError(f'{path}: not a PyTorch checkpoint (it starts with {head!r}); check the path, '
                                      'or download the file again (an HTML error page saved as .pth looks like this).')
    try:
        if USE_TORCH_SAFE_GLOBALS:
            with torch.serialization.safe_globals(_safe_globals_entries()):
                return torch.load(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=False, pickle_module=ALLOWLIST_PICKLE)
    except UnsafeCheckpointError as err:
        raise _refused(path, err.globals, err.reason) from None
    except pickle.UnpicklingError as err:  # torch's weights-only unpickler refused something
        try:
            refused = checkpoint_globals(path) - set(allowed_globals())
        except Exception:  # noqa: BLE001 (not even a pickle)
            raise _unreadable(path, err) from None
        if refused:
            raise _refused(path, refused) from None
        if 'weights only' in str(err).lower():  # torch's advice (weights_only=False) is not ours: keep its reason
            reason = str(err).split('WeightsUnpickler error:')[-1].strip().split('\n\n')[0]
            raise _refused(path, [], _short(reason).rstrip('.')) from None
        raise _unreadable(path, err) from None
    except (EOFError, IndexError, KeyError, ValueError, TypeError, RuntimeError, zipfile.BadZipFile,
            UnicodeDecodeError) as err:
        raise _unreadable(path, err) from err


def read_checkpoint(path: str, map_location: str = 'cpu') -> Dict[str, Any]:
    """Load a checkpoint file: a local path through the allow-list; ``http(s)://`` through
    :func:`load_url_checkpoint`; other URLs (``open-mmlab://``, ``s3://`` ...) by mmengine's
    loaders."""
    path = str(path)
    if path.startswith(('http://', 'https://')):
        return load_url_checkpoint(path, map_location=map_location)
    if '://' in path:
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file {path!r} does not exist; check init_cfg.checkpoint '
                                '(or the path you passed)')
    return load_local_checkpoint(path, map_location=map_location)


#: seconds a download may wait to connect, and then for each read (``EDGEFORMERS_DOWNLOAD_TIMEOUT``)
DOWNLOAD_TIMEOUT = 30.0


def download_timeout() -> float:
    value = os.environ.get('EDGEFORMERS_DOWNLOAD_TIMEOUT')
    try:
        return float(value) if value else DOWNLOAD_TIMEOUT
    except ValueError:
        raise ValueError(f'EDGEFORMERS_DOWNLOAD_TIMEOUT={value!r}: give the timeout in seconds, e.g. 30') from None


def cached_download_path(url: str) -> str:
    """Where :func:`load_url_checkpoint` keeps ``url``: torch's hub cache, ``checkpoints/NAME``."""
    from urllib.parse import urlparse
    from torch.hub import get_dir
    name = os.path.basename(urlparse(url).path) or 'checkpoint.pth'
    return os.path.join(get_dir(), 'checkpoints', name)


def load_url_checkpoint(url: str, map_location: Any = None, timeout: Optional[float] = None) -> Any:
    """Load an ``http(s)://`` checkpoint, downloading it into torch's hub cache first.

    The download has a connect and read timeout (:data:`DOWNLOAD_TIMEOUT`), goes to a
    temporary file beside the cached one, and is read through the allow-list before it is
    renamed into place: the cache only ever holds whole, readable checkpoints. Every error
    names the URL."""
    import urllib.error
    import urllib.request
    import uuid
    timeout = download_timeout() if timeout is None else timeout
    cached = cached_download_path(url)
    if os.path.isfile(cached):
        try:
            return load_local_checkpoint(cached, map_location=map_location)
        except CheckpointFileError as err:
            raise CheckpointFileError(f'{url}: the cached copy {cached} cannot be read ({err}); delete it to '
                                      'download the checkpoint again') from None
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    tmp = f'{cached}.partial-{uuid.uuid4().hex[:12]}'
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, 'wb') as f:
                expected = response.headers.get('Content-Length')
                received = 0
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
            if expected is not None and expected.isdigit() and received != int(expected):
                raise CheckpointFileError(f'{url}: the download ended after {received} of {expected} bytes; try '
                                          'again (nothing was cached)')
        except urllib.error.HTTPError as err:
            raise CheckpointFileError(f'{url}: the server answered HTTP {err.code} ({err.reason}); check the URL '
                                      '(nothing was cached)') from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, 'reason', err)
            if isinstance(reason, TimeoutError) or 'timed out' in str(reason):
                reason = f'no answer within {timeout:g} s (EDGEFORMERS_DOWNLOAD_TIMEOUT sets the timeout)'
            raise CheckpointFileError(f'{url}: the download failed: {reason}; check the URL and the network, or '
                                      'download the file yourself and pass its path (nothing was cached)') from None
        try:
            checkpoint = load_local_checkpoint(tmp, map_location=map_location)
        except CheckpointFileError as err:
            raise type(err)(f'{url}: the downloaded file is not a readable checkpoint '
                            f'({str(err).replace(tmp, "the download")}); nothing was cached') from None
        os.replace(tmp, cached)
        return checkpoint
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
