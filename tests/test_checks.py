"""backbones/checks.py: what counts as a whole or a real number, and the errors that name the
argument, its owner and the bound."""
import math

import numpy as np
import pytest

from backbones.checks import is_number, is_whole, real_number, whole_number


@pytest.mark.parametrize('value,whole,number', [
    (3, True, True), (np.int64(3), True, True), (0, True, True), (-2, True, True),
    (2.5, False, True), (np.float32(0.5), False, True), (2.0, False, True),
    (True, False, False), (False, False, False), (math.nan, False, False), ('3', False, False), (None, False, False),
])
def test_bools_strings_and_nan_are_no_numbers(value, whole, number):
    assert is_whole(value) is whole and is_number(value) is number


def test_whole_number_returns_an_int_and_names_what_is_wrong():
    assert whole_number('Owner', 'epochs', np.int32(4), least=1) == 4
    assert type(whole_number('Owner', 'epochs', np.int32(4), least=1)) is int
    with pytest.raises(ValueError, match=r'^Owner: warmup must be a whole number of epochs >= 0, got -1$'):
        whole_number('Owner', 'warmup', -1, least=0, unit='epochs')
    with pytest.raises(ValueError, match=r'got True'):
        whole_number('Owner', 'n', True, least=0)


def test_real_number_bounds_inclusive_and_strict():
    assert real_number('Owner', 'lr', 0) == 0.0
    with pytest.raises(ValueError, match=r'^Owner: lr must be a number >= 0, got -0.1$'):
        real_number('Owner', 'lr', -0.1)
    with pytest.raises(ValueError, match=r'^Owner: tau must be a number > 0, got 0$'):
        real_number('Owner', 'tau', 0, strict=True)
    with pytest.raises(ValueError, match=r'got nan'):
        real_number('Owner', 'tau', math.nan)
