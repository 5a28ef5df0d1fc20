"""Checks of the numeric arguments the package's constructors take. A bool is no number here
(``isinstance(True, int)`` holds in Python) and NaN is no real number."""
import math
import numbers


def is_whole(value) -> bool:
    """An integer (``int``, numpy's integers), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real number that is not NaN, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def whole_number(owner: str, name: str, value, least: int, unit: str = '') -> int:
    """``value`` as an int; a ValueError naming ``owner`` and ``name`` when it is not a whole
    number of at least ``least``."""
    if not is_whole(value) or value < least:
        of = f' of {unit}' if unit else ''
        raise ValueError(f'{owner}: {name} must be a whole number{of} >= {least}, got {value!r}')
    return int(value)


def real_number(owner: str, name: str, value, least: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float; a ValueError naming ``owner`` and ``name`` when it is not a number
    of at least ``least`` (above it when ``strict``)."""
    if not is_number(value) or value < least or (strict and value == least):
        raise ValueError(f'{owner}: {name} must be a number {">" if strict else ">="} {least:g}, got {value!r}')
    return float(value)
