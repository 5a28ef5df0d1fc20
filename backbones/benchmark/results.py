"""Where and how a measurement ran, and the files that keep it: every results file starts
with the command that wrote it, the date and the machine (:func:`provenance`)."""
from __future__ import annotations

import datetime
import os
from typing import Dict, List, Optional, Sequence

import torch


def machine_description(cpuinfo: str = '/proc/cpuinfo') -> str:
    """``'AMD EPYC (family 26, model 2, AVX-512), 2 cores, torch 2.13.0'``: the CPU's name,
    and on x86 its family and model and widest vector extension, since one marketing name
    covers several generations, and the ratios between models differ between them."""
    import platform
    cpu = platform.processor() or platform.machine()
    fields: Dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(':')
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get('model name', cpu)
    flags = set(fields.get('flags', fields.get('Features', '')).split())
    vector = next((name for flag, name in (('avx512f', 'AVX-512'), ('avx2', 'AVX2'), ('sve', 'SVE'),
                                           ('asimd', 'NEON')) if flag in flags), None)
    details = [f'family {fields["cpu family"]}, model {fields["model"]}'] if 'cpu family' in fields else []
    details += [vector] if vector else []
    if details:
        cpu += f' ({", ".join(details)})'
    return f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__.split("+")[0]}'


def provenance(machine: str, command: Sequence[str]) -> str:
    """The line every results file starts with: the command that wrote it, the date and the
    machine, e.g. ``tools/benchmark.py --end-to-end, 2026-12-07, on AMD EPYC ...``."""
    return f'`{" ".join(command)}`, {datetime.date.today().isoformat()}, on {machine}.'


def write_results(stem: str, header: str, text: str, data: Optional[dict] = None) -> List[str]:
    """Write ``header`` and ``text`` to ``stem.md`` and, with ``data``, ``data`` (plus the
    header as ``provenance``) to ``stem.json``, each atomically; returns the paths."""
    from ..fileio import write_json, write_text
    write_text(stem + '.md', f'{header}\n\n{text}\n')
    paths = [stem + '.md']
    if data is not None:
        write_json(stem + '.json', dict(provenance=header, **data), indent=2)
        paths.append(stem + '.json')
    return paths
