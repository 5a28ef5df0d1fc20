"""backbones.benchmark.end_to_end and .memory: what the end-to-end graph adds to the raw
network, and what running an export adds to a process's peak memory."""
import pytest
import torch


def test_end_to_end_table_splits_post_processing():
    """What the end-to-end graph adds (end to end less raw), and for Mask R-CNN the part
    besides its RoI heads (timed alone); one-stage models have no such part."""
    from backbones.benchmark.end_to_end import EndToEndTiming, format_end_to_end_table
    two = EndToEndTiming('mask-rcnn@rpn.max_per_img=300', 'two-stage', 'executorch', 1, (640, 640), 400.0, 1200.0, 5,
                         delegated_post_ms=200.0, raw_peak_mb=90.4, end_to_end_peak_mb=1100.0)
    one = EndToEndTiming('retinanet', 'one-stage', 'executorch', 1, (640, 640), 1000.0, 1100.0, 5)
    assert (two.post_ms, two.other_post_ms) == (800.0, 600.0) and two.other_post_share == pytest.approx(0.5)
    assert one.other_post_ms == one.post_ms == 100.0
    table = format_end_to_end_table([two, one])
    assert 'besides RoI heads ms' in table
    assert ('| mask-rcnn@rpn.max_per_img=300 | 640x640 | executorch | 1 | 400.00 | 1200.00 | 800.00 | 66.7% | 600.00 '
            '| 50.0% | 90 / 1100 |') in table
    assert '| 1000.00 | 1100.00 | 100.00 | 9.1% | 100.00 | 9.1% | — / — |' in table  # memory not measured


def test_memory_plan_and_peak_memory_of_an_export(tmp_path):
    """Two portable operators each write a [1, 64, 256, 256] float tensor that lives until the
    next one has read it: the program plans both (2 x 16 MiB), and running it once in a fresh
    process raises the peak resident memory by that much, plus little."""
    pytest.importorskip('executorch')
    from backbones.benchmark.memory import peak_memory_mb
    from backbones.export.formats import write_executorch

    class TwoBuffers(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(x.repeat(1, 64, 1, 1), dim=1).sum(dim=(2, 3))

    x = torch.rand(1, 1, 256, 256)
    path = str(tmp_path / 'two_buffers.pte')
    written = write_executorch(TwoBuffers(), x, path)
    two_maps = 2 * 64 * 256 * 256 * 4
    assert two_maps <= written.planned_bytes <= two_maps + 4096
    peak = peak_memory_mb('executorch', path, x)
    assert two_maps / 1e6 <= peak <= two_maps / 1e6 + 32, peak
