"""backbones.benchmark.latency and .plot: ratios to MobileNetV2 of the same run, the table,
the published top-1 beside each model, the plot."""
import pytest

from backbones.benchmark.baselines import REFERENCE, top1
from backbones.benchmark.latency import Timing, format_table, set_ratios
from backbones.registry import variants


def _timings():
    return [Timing(REFERENCE, 'executorch', 1, 8.0, 9.0, 100), Timing('efficientformerv2_s0', 'executorch', 1, 12.0, 13.0, 80),
            Timing(REFERENCE, 'executorch', 2, 5.0, 6.0, 100), Timing('efficientformerv2_s0', 'executorch', 2, 6.0, 7.0, 80)]


def test_ratios_are_to_the_reference_of_the_same_format_and_threads():
    timings = set_ratios(_timings())
    assert [t.ratio for t in timings] == [1.0, 1.5, 1.0, 1.2]


def test_a_missing_reference_is_named():
    with pytest.raises(ValueError, match='no timing of mobilenet_v2_x1.0 at onnx, 1 thread'):
        set_ratios(_timings() + [Timing('edgevit_xxs', 'onnx', 1, 3.0, 4.0, 10)])


def test_table_has_a_column_per_format_and_thread_count():
    table = format_table(set_ratios(_timings()))
    assert '| model | top-1 | executorch 1T ms (x MNv2) | executorch 2T ms (x MNv2) |' in table
    assert '| efficientformerv2_s0 | 75.7 | 12.00 (1.50x) | 6.00 (1.20x) |' in table


def test_top1_is_the_published_figure_of_every_variant():
    for v in variants():
        assert top1(v.name) == float(v.imagenet['top1'])
    assert top1('mobilenet_v2_x1.0') == pytest.approx(71.878) and top1('unknown') is None


def test_plot_is_written(tmp_path):
    from backbones.benchmark.plot import plot
    png = plot(set_ratios(_timings()), 'executorch', 1, str(tmp_path / 'plot.png'), 'test machine')
    assert (tmp_path / 'plot.png').stat().st_size > 1000 and png.endswith('.png')
