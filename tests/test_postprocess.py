"""backbones.export.postprocess: greedy NMS unrolled in the graph and the fixed-point NMS both
equal greedy NMS over all candidates (torchvision's batched NMS)."""
import pytest
import torch

from backbones.export.postprocess import fixed_point_nms, greedy_nms


def _random_boxes(n, seed, spread=60.0, size=20.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * spread
    wh = 2 + torch.rand(n, 2, generator=g) * size
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize('seed', range(6))
def test_fixed_point_nms_equals_greedy(seed):
    """Many overlapping boxes, several classes, some invalid: the fixed point equals
    torchvision's batched (class-wise) greedy NMS."""
    torchvision = pytest.importorskip('torchvision')
    n = 300
    boxes, scores = _random_boxes(n, seed)
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed + 100))
    valid = torch.rand(n, generator=torch.Generator().manual_seed(seed + 200)) > 0.1
    expected = torchvision.ops.batched_nms(boxes[valid], scores[valid], labels[valid], 0.5)
    expected = torch.nonzero(valid)[:, 0][expected]
    order = torch.argsort(scores, descending=True)
    offset = boxes + labels[:, None].float() * (boxes.max() + 1)
    keep, settled = fixed_point_nms(offset[order], valid[order], 0.5, iterations=n)
    assert settled.all()
    assert torch.equal(order[keep], expected)
    # the iteration reaches the fixed point long before n steps; fewer steps than needed
    # leave a settled prefix that is still exactly greedy's
    depth = next(t for t in range(1, n) if fixed_point_nms(offset[order], valid[order], 0.5, t)[1].all())
    assert depth < 32
    few, settled = fixed_point_nms(offset[order], valid[order], 0.5, max(depth - 2, 0))
    kept = order[few]
    assert torch.equal(kept, expected[:len(kept)])


def test_fixed_point_nms_solves_stacked_problems_independently():
    """The RPN's levels, padded to one length and stacked, iterate together: each row's result
    is the one it gets alone, and padding (invalid rows) suppresses nothing."""
    rows, alone = [], []
    for seed, n in ((0, 300), (1, 120), (2, 40)):
        boxes, scores = _random_boxes(n, seed)
        order = torch.argsort(scores, descending=True)
        boxes = boxes[order]
        valid = torch.ones(n, dtype=torch.bool)
        alone.append(fixed_point_nms(boxes, valid, 0.7, 32)[0])
        rows.append((torch.cat([boxes, torch.zeros(300 - n, 4)]), torch.cat([valid, torch.zeros(300 - n, dtype=torch.bool)])))
    keep, settled = fixed_point_nms(torch.stack([b for b, _ in rows]), torch.stack([v for _, v in rows]), 0.7, 32)
    assert settled.all()
    for row, expected in zip(keep, alone):
        assert torch.equal(row[:len(expected)], expected) and not row[len(expected):].any()


@pytest.mark.parametrize('seed', range(4))
def test_greedy_nms_equals_greedy_over_all_candidates(seed):
    """The unrolled greedy NMS RetinaNet exports: thousands of overlapping boxes of a few
    classes (most suppressed, so the 100th kept box lies deep in the score order) give
    torchvision's batched greedy NMS, first 100 boxes, exactly; fewer survivors pad with
    kept = False."""
    torchvision = pytest.importorskip('torchvision')
    n = 3000
    # clusters of near-duplicates around 70 objects, as a detector's anchors give them
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(70, 2, generator=g) * 300
    objects = torch.cat([xy, xy + 40 + torch.rand(70, 2, generator=g) * 50], 1)
    boxes = objects[torch.randint(0, 70, (n,), generator=g)] + torch.randn(n, 4, generator=g) * 1.5
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed + 100))
    valid = torch.rand(n, generator=torch.Generator().manual_seed(seed + 200)) > 0.2
    expected = torchvision.ops.batched_nms(boxes[valid], scores[valid], labels[valid], 0.5)
    expected = torch.nonzero(valid)[:, 0][expected]
    offset = boxes + labels[:, None].float() * (boxes.max() + 1)
    index, kept = greedy_nms(offset, scores, valid, 0.5, 100)
    assert kept.all() and torch.equal(index, expected[:100])
    assert (scores[valid] > scores[expected[99]]).sum() > 200  # the 100th kept is deep in the order
    few = valid & (torch.arange(n) < 40)
    index, kept = greedy_nms(offset, scores, few, 0.5, 100)
    expected = torch.nonzero(few)[:, 0][torchvision.ops.batched_nms(boxes[few], scores[few], labels[few], 0.5)]
    assert kept.sum() == len(expected) < 100 and torch.equal(index[kept], expected) and not kept[len(expected):].any()
