"""N:M masks against a brute-force enumeration of the groups, and the semi-structured path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning import (
    LatencySettings,
    NMPattern,
    follows_pattern,
    nm_latency_ms,
    nm_mask,
    parse_pattern,
    semi_structured_copies,
)
from pruning.nm_latency import Im2colConv2d

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="semi-structured sparse kernels need a CUDA GPU"
)


def brute_force_nm(scores: torch.Tensor, alive: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Plain Python: per output row, per run of m entries, keep the n best alive (ties: first)."""
    rows_scores = scores.reshape(scores.shape[0], -1).tolist()
    rows_alive = alive.reshape(alive.shape[0], -1).tolist()
    kept_rows = []
    for row_scores, row_alive in zip(rows_scores, rows_alive, strict=True):
        kept = [False] * len(row_scores)
        for start in range(0, len(row_scores), m):
            candidates = [(row_scores[i], i) for i in range(start, start + m) if row_alive[i]]
            candidates.sort(key=lambda pair: (-pair[0], pair[1]))
            for _, i in candidates[:n]:
                kept[i] = True
        kept_rows.append(kept)
    return torch.tensor(kept_rows).reshape(scores.shape)


SHAPES = {
    "fc.weight": (6, 16),  # linear [out, in]: groups along the 16 inputs
    "conv.weight": (4, 4, 3, 3),  # conv: rows of 4 * 3 * 3 = 36, groups cross input channels
}


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 4), (2, 2), (4, 4)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nm_mask_equals_brute_force_with_ties_and_a_prior_mask(n: int, m: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    # Integer scores from a small range: many ties, which must go to the earlier weight.
    scores = {
        name: torch.randint(0, 3, shape, generator=generator).float()
        for name, shape in SHAPES.items()
    }
    prior = {name: torch.rand(shape, generator=generator) < 0.8 for name, shape in SHAPES.items()}
    result = nm_mask(scores, prior, f"{n}:{m}")
    assert result.skipped == {}
    for name in SHAPES:
        assert torch.equal(result.mask[name], brute_force_nm(scores[name], prior[name], n, m))
        assert not (result.mask[name] & ~prior[name]).any()  # nothing revived


def test_full_mask_keeps_exactly_n_of_every_m() -> None:
    scores = {"w": torch.randn(8, 32)}
    result = nm_mask(scores, {"w": torch.ones(8, 32, dtype=torch.bool)}, "2:4")
    assert torch.equal(result.mask["w"].reshape(-1, 4).sum(dim=1), torch.full((64,), 2))
    assert follows_pattern(result.mask, "2:4") == {"w": True}
    assert follows_pattern({"w": torch.ones(8, 32, dtype=torch.bool)}, "2:4") == {"w": False}


def test_indivisible_rows_are_skipped_with_the_reason_or_refused() -> None:
    stem = torch.ones(4, 3, 7, 7, dtype=torch.bool)  # rows of 147
    scores = {"stem.weight": torch.randn(4, 3, 7, 7), "fc.weight": torch.randn(2, 8)}
    mask = {"stem.weight": stem, "fc.weight": torch.ones(2, 8, dtype=torch.bool)}
    result = nm_mask(scores, mask, "2:4")
    assert list(result.skipped) == ["stem.weight"]
    assert "147" in result.skipped["stem.weight"]
    assert torch.equal(result.mask["stem.weight"], stem)
    assert int(result.mask["fc.weight"].sum()) == 8
    with pytest.raises(ValueError, match="stem.weight"):
        nm_mask(scores, mask, "2:4", on_indivisible="error")


@pytest.mark.parametrize("text", ["2-4", "5:4", "0:4", "2:", "a:b", "2:4:8"])
def test_bad_patterns_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match="prune.pattern"):
        parse_pattern(text)


def test_pattern_parses_and_reports_its_sparsity() -> None:
    assert parse_pattern(" 2 : 4 ") == NMPattern(2, 4)
    assert parse_pattern("1:4").sparsity == 0.75
    assert str(NMPattern(2, 8)) == "2:8"


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "bias"),
    [(1, 1, 1, True), (2, 0, 1, False), (2, 2, 2, True)],
)
def test_im2col_convolution_equals_conv2d(
    stride: int, padding: int, dilation: int, bias: bool
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    rewritten = Im2colConv2d(conv, conv.weight.detach().reshape(5, -1))
    inputs = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    torch.testing.assert_close(
        rewritten(inputs), F.conv2d(inputs, conv.weight, conv.bias, stride, padding, dilation)
    )


def test_on_the_cpu_nm_latency_says_it_measured_dense() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    result = nm_latency_ms(model, (3, 2, 2), LatencySettings(batch_sizes=(1,), budget_s=0.0))
    assert result.measured_as.startswith("dense")
    assert result.sparse is None and result.dense_im2col is None
    assert result.dense.repeats[1] == 3


@pytest.mark.cuda
@needs_cuda
def test_semi_structured_copies_compute_what_the_dense_model_computes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 1), nn.Flatten(),
        nn.Linear(64 * 8 * 8, 128),
    ).cuda()  # fmt: skip
    weights = {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if hasattr(module, "weight")
    }
    result = nm_mask(
        {k: w.detach().abs() for k, w in weights.items()},
        {k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()},
        "2:4",
    )
    with torch.no_grad():
        for key, weight in weights.items():
            weight.mul_(result.mask[key])
    copies = semi_structured_copies(model)
    assert copies.converted  # at least the 1x1 conv and the linear layer are eligible
    inputs = torch.randn(4, 16, 8, 8, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        dense = copies.dense(inputs)
        torch.testing.assert_close(copies.dense_im2col(inputs), dense, rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(copies.sparse(inputs), dense, rtol=2e-2, atol=2e-2)
    timed = nm_latency_ms(model, (16, 8, 8), LatencySettings(batch_sizes=(1,), budget_s=0.0))
    assert timed.sparse is not None and timed.measured_as.startswith("cuda")


def layers_for_selection() -> nn.Sequential:
    """Five Conv2d/Linear layers on 16-channel 4x4 inputs; with cuSPARSELt's float16 minimum
    block of 16x16 (weight matrices [out, in*kh*kw]):

    * 0: conv 16->32, 3x3: 32 x 144, a multiple, but dense (an excluded first layer): not 2:4;
    * 2: conv 32->32, 1x1: 32 x 32, made 2:4 below: sparse;
    * 3: conv 32->32, 1x1, groups 2: no im2col rewrite for grouped convolutions;
    * 5: linear 512->16: 16 x 512, made 2:4 below: sparse;
    * 6: linear 16->10: 10 x 16, 10 rows is not a multiple of 16.
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 1),
        nn.Conv2d(32, 32, 1, groups=2), nn.Flatten(), nn.Linear(32 * 4 * 4, 16), nn.Linear(16, 10),
    )  # fmt: skip
    with torch.no_grad():
        for index in (2, 5):  # keep the first two of every group of four along each row
            weight = model[index].weight
            weight.view(weight.shape[0], -1, 4)[..., 2:] = 0
    return model


@pytest.fixture
def cusparselt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend to_sparse_semi_structured picks by default (its minimum blocks apply)."""
    from torch.sparse.semi_structured import SparseSemiStructuredTensor

    monkeypatch.setattr(SparseSemiStructuredTensor, "_FORCE_CUTLASS", False)


def test_a_layer_that_is_not_2_4_stays_dense_and_the_others_are_converted(cusparselt) -> None:
    from pruning.nm_latency import NOT_2_4, semi_structured_layers

    layers, skipped = semi_structured_layers(layers_for_selection(), torch.float16)
    assert sorted(layers) == ["2", "5"]
    assert skipped["0"] == NOT_2_4
    assert sorted(skipped) == ["0", "3", "6"]
    assert "grouped" in skipped["3"] and "10x16" in skipped["6"]


def test_copies_of_a_partly_2_4_model_convert_its_2_4_layers(cusparselt, monkeypatch) -> None:
    # The CPU has no semi-structured kernel: the conversion is the identity here, the
    # selection around it is what is tested.
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", lambda weight: weight)
    copies = semi_structured_copies(layers_for_selection())
    assert copies.converted == ["2", "5"]
    assert sorted(copies.skipped) == ["0", "3", "6"]
    assert isinstance(copies.sparse[0], nn.Conv2d)  # left dense, as it is
    assert isinstance(copies.sparse[2], Im2colConv2d)
    assert copies.sparse[5].weight.dtype == torch.float16


def test_on_cuda_measured_as_says_how_many_layers_ran_sparse(cusparselt, monkeypatch) -> None:
    import pruning.nm_latency as nm_latency

    formats = []

    def fake_latency(model, input_shape, settings, **options):
        formats.append(options["memory_format"])
        return nm_latency.LatencyResult({1: 1.0}, {1: 3}, "cuda:0", None, {1: [1.0] * 3})

    monkeypatch.setattr(nm_latency, "model_device", lambda model: torch.device("cuda:0"))
    monkeypatch.setattr(nm_latency, "latency_ms", fake_latency)
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", lambda weight: weight)
    model = layers_for_selection().to(memory_format=torch.channels_last)
    result = nm_latency_ms(model, (16, 4, 4), LatencySettings(batch_sizes=(1,)))
    assert result.measured_as == (
        "cuda: 2 of 5 Conv2d/Linear layers ran 2:4 sparse "
        "(torch.sparse.to_sparse_semi_structured, fp16), the others dense"
    )
    assert result.converted == ["2", "5"] and result.sparse is not None
    # Every copy is timed on an input in the trial's layout, also once its convolutions have
    # been rewritten (which leaves no Conv2d to read it from in a fully converted copy).
    assert formats == [torch.channels_last] * 3
