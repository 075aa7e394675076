"""Batched augmentation and batch iteration: shapes, ranges, seeds, hand-computed crops."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from trainables.augment import BatchAugment
from trainables.batches import iterate_batches
from trainables.datasets import batch_augment

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


def random_batch(b=8, c=3, s=18, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, s, s), generator=g, dtype=torch.uint8)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unnormalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


def plain_normalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    return (x.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(
        1, -1, 1, 1
    )


def test_train_shapes_dtype_and_range():
    aug = BatchAugment(16, MEAN, STD, train=True, crop_scale=(0.08, 1.0), hflip=True)
    out = aug(random_batch(), seeded(0))
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.float32
    raw = unnormalise(out)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    assert raw.std() > 0.1  # not collapsed to a constant


def test_output_dtype_and_channels_last():
    aug = BatchAugment(16, MEAN, STD, train=True, dtype=torch.bfloat16, channels_last=True)
    out = aug(random_batch(), seeded(0))
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_rejects_float_input_and_channel_mismatch():
    aug = BatchAugment(16, MEAN, STD, train=False)
    with pytest.raises(ValueError, match="uint8"):
        aug(random_batch(s=16).float())
    with pytest.raises(ValueError, match="channels"):
        aug(random_batch(c=1, s=16))


def test_seed_determines_the_batch():
    aug = BatchAugment(16, MEAN, STD, train=True, hflip=True)
    images = random_batch()
    a = aug(images, seeded(1))
    b = aug(images, seeded(1))
    c = aug(images, seeded(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_eval_is_plain_normalisation():
    aug = BatchAugment(16, MEAN, STD, train=False)
    images = random_batch(s=16)
    torch.testing.assert_close(aug(images), plain_normalise(images), rtol=1e-5, atol=1e-5)


def test_eval_center_crops_larger_inputs_like_torchvision():
    aug = BatchAugment(16, MEAN, STD, train=False)
    for side in (18, 19, 21):  # even and odd margins (torchvision rounds half to even)
        images = random_batch(s=side)
        expected = plain_normalise(TF.center_crop(images, [16, 16]))
        torch.testing.assert_close(aug(images), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="smaller than image_size"):
        aug(random_batch(s=12))


def test_flips_happen_about_half_the_time():
    # Identity crop at the same size: each output is the image or its mirror.
    n = 400
    aug = BatchAugment(16, (0.0,), (1.0,), train=True, crop_scale=(1, 1), crop_ratio=(1, 1))
    images = random_batch(b=n, c=1, s=16)
    out = aug(images, seeded(0)) * 255
    same = (out - images.float()).abs().amax(dim=(1, 2, 3)) < 1e-3
    mirrored = (out - images.float().flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-3
    assert bool((same ^ mirrored).all())
    assert 0.4 * n < int(mirrored.sum()) < 0.6 * n
    no_flip = BatchAugment(
        16, (0.0,), (1.0,), train=True, crop_scale=(1, 1), crop_ratio=(1, 1), hflip=False
    )
    torch.testing.assert_close(no_flip(images, seeded(0)) * 255, images.float())


def ramp_image(side: int) -> torch.Tensor:
    """Channel 0: 10 * column index; channel 1: 10 * row index (uint8)."""
    idx = torch.arange(side, dtype=torch.uint8) * 10
    return torch.stack([idx.expand(side, side), idx[:, None].expand(side, side)])[None]


def test_fixed_box_crops_the_expected_pixels():
    image = ramp_image(16)
    aug = BatchAugment(8, (0.0, 0.0), (1.0, 1.0), train=True)
    # Box x 4..12, y 2..10 (pixel edges), output 8x8: exactly pixels [2:10, 4:12].
    out = aug.crop(image, torch.tensor([[4.0, 2.0, 12.0, 10.0]]))
    torch.testing.assert_close(out, image[..., 2:10, 4:12].float())
    assert out[0, 0, 0].tolist() == [40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0]


def test_random_crops_of_a_ramp_match_hand_computed_samples():
    # Random boxes no larger than the output: one bilinear sample per output pixel, at
    # x = x1 + (j + 0.5) * w / out - 0.5 (pixel-centre coordinates), clamped to the image.
    side, out_size, n = 16, 16, 32
    aug = BatchAugment(out_size, (0.0, 0.0), (1 / 255, 1 / 255), train=True, hflip=False)
    images = ramp_image(side).expand(n, -1, -1, -1).contiguous()
    boxes = aug.sample_boxes(n, side, side, seeded(5))
    out = aug(images, seeded(5))
    j = torch.arange(out_size, dtype=torch.float64) + 0.5
    for b in range(n):
        x1, y1, x2, y2 = boxes[b].double().tolist()
        xs = (x1 + j * (x2 - x1) / out_size - 0.5).clamp(0, side - 1)
        ys = (y1 + j * (y2 - y1) / out_size - 0.5).clamp(0, side - 1)
        torch.testing.assert_close(
            out[b, 0].double(), (10 * xs).expand(out_size, -1), atol=2e-3, rtol=0
        )
        torch.testing.assert_close(
            out[b, 1].double(), (10 * ys)[:, None].expand(-1, out_size), atol=2e-3, rtol=0
        )


def test_sampled_boxes_follow_random_resized_crop_semantics():
    scale, ratio = (0.25, 0.75), (3 / 4, 4 / 3)
    aug = BatchAugment(16, MEAN, STD, train=True, crop_scale=scale, crop_ratio=ratio)
    boxes = aug.sample_boxes(2000, 20, 20, seeded(0))
    x1, y1, x2, y2 = boxes.unbind(1)
    w, h = x2 - x1, y2 - y1
    eps = 1e-4
    assert bool((x1 >= -eps).all() and (y1 >= -eps).all())
    assert bool((x2 <= 20 + eps).all() and (y2 <= 20 + eps).all())
    area = w * h / 400
    assert bool((area >= scale[0] - eps).all() and (area <= scale[1] + eps).all())
    assert bool((w / h >= ratio[0] - eps).all() and (w / h <= ratio[1] + eps).all())
    # Log-uniform ratio: about half the boxes are wider than tall.
    assert 0.45 < (w > h).float().mean().item() < 0.55
    assert abs((w * h / 400).mean().item() - 0.5) < 0.02  # uniform area fraction, mean 0.5


def test_fallback_is_the_centered_clamped_ratio_box():
    # Full-area boxes with ratio in [2, 3] never fit a square: torchvision falls back to the
    # whole width and height = width / 2, centred.
    aug = BatchAugment(16, MEAN, STD, train=True, crop_scale=(1, 1), crop_ratio=(2, 3))
    boxes = aug.sample_boxes(4, 20, 20, seeded(0))
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 5.0, 20.0, 15.0]]).expand(4, -1))


def test_identity_crop_is_a_resize():
    aug_up = BatchAugment(
        16, (0.0,), (1 / 255,), train=True, crop_scale=(1, 1), crop_ratio=(1, 1), hflip=False
    )
    small = random_batch(b=4, c=1, s=12)
    expected = F.interpolate(small.float(), size=16, mode="bilinear", align_corners=False)
    torch.testing.assert_close(aug_up(small, seeded(0)), expected, atol=1e-3, rtol=1e-5)
    # Shrinking by 2: adaptive sampling averages 2x2 samples at the pixel centres = area resize.
    big = random_batch(b=4, c=1, s=32)
    expected = F.interpolate(big.float(), size=16, mode="area")
    torch.testing.assert_close(aug_up(big, seeded(0)), expected, atol=1e-3, rtol=1e-5)
    # Same size: the image itself.
    same = random_batch(b=4, c=1, s=16)
    torch.testing.assert_close(aug_up(same, seeded(0)), same.float(), atol=1e-3, rtol=1e-5)


def test_from_config_applies_dataset_defaults_and_augment_switch():
    splits = types.SimpleNamespace(image_size=32, mean=(0.3,), std=(0.4,))
    cfg = types.SimpleNamespace(name="digits", augment=True, crop_scale_min=None, hflip=None)
    aug = batch_augment(cfg, splits, train=True)
    assert aug.train and aug.crop_scale == (0.6, 1.0) and aug.hflip is False
    assert aug.image_size == 32 and aug.mean == (0.3,)
    cfg = types.SimpleNamespace(name="flowers102", augment=True, crop_scale_min=0.5, hflip=False)
    aug = batch_augment(cfg, splits, train=True)
    assert aug.crop_scale == (0.5, 1.0) and aug.hflip is False
    cfg = types.SimpleNamespace(name="flowers102", augment=False, crop_scale_min=None, hflip=None)
    assert not batch_augment(cfg, splits, train=True).train
    assert not batch_augment(cfg, splits, train=False).train


def coordinate_batch(b: int, side: int) -> torch.Tensor:
    """Images whose pixel (y, x) holds value 1 + y * side + x (unique, never 0: padding is)."""
    grid = 1 + torch.arange(side * side, dtype=torch.int64).view(1, 1, side, side)
    return grid.expand(b, 1, side, side).to(torch.uint8).contiguous()


def test_padded_crop_is_torchvision_random_crop_with_padding():
    side, pad, b = 12, 4, 400
    aug = BatchAugment(side, (0.5,), (0.25,), train=True, crop="padded", crop_padding=pad,
                       hflip=False)
    images = coordinate_batch(b, side)
    out = aug.padded_crop(images, seeded(3))
    assert out.dtype == torch.uint8 and out.shape == (b, 1, side, side)
    offsets = set()
    for i in range(b):
        # Where the crop starts in the padded image: found from the pixels alone.
        inside = (out[i, 0] > 0).nonzero()
        value = int(out[i, 0, inside[0, 0], inside[0, 1]]) - 1
        top = pad + value // side - int(inside[0, 0])
        left = pad + value % side - int(inside[0, 1])
        expected = TF.crop(TF.pad(images[i], [pad]), top, left, side, side)
        assert torch.equal(out[i], expected), i
        offsets.add((top, left))
    # Every one of the (2 * pad + 1)^2 offsets torchvision's RandomCrop can pick shows up.
    assert offsets == {(t, c) for t in range(2 * pad + 1) for c in range(2 * pad + 1)}


def test_padded_crop_train_path_normalises_and_flips():
    aug = BatchAugment(8, (0.5,), (0.25,), train=True, crop="padded", crop_padding=0, hflip=True)
    images = coordinate_batch(64, 8)
    out = aug(images, seeded(0))  # padding 0 at full size: the crop is the image itself
    plain = plain_normalise(images, (0.5,), (0.25,))
    flipped = [torch.allclose(o, plain[0].flip(-1), atol=1e-5) for o in out]
    assert all(flipped[i] or torch.allclose(out[i], plain[i], atol=1e-5) for i in range(64))
    assert 10 < sum(flipped) < 54
    cfg = types.SimpleNamespace(name="cifar10", augment=True, crop_scale_min=None, hflip=None)
    splits = types.SimpleNamespace(image_size=32, mean=MEAN, std=STD)
    from_cfg = batch_augment(cfg, splits, train=True)
    assert (from_cfg.crop_mode, from_cfg.crop_padding, from_cfg.hflip) == ("padded", 4, True)


# ----------------------------------------------------------------------------- batches


def make_data(n=50, side=18):
    images = random_batch(b=n, c=3, s=side, seed=3)
    labels = torch.arange(n, dtype=torch.int64)
    return images, labels


def collect(images, labels, seed, **kwargs):
    kwargs.setdefault("augment", BatchAugment(16, MEAN, STD, train=True))
    generator = seeded(seed) if seed is not None else None
    return list(iterate_batches(images, labels, 16, generator=generator, device="cpu", **kwargs))


def test_batches_cover_the_epoch_once_and_respect_drop_last_and_max_batches():
    images, labels = make_data()
    batches = collect(images, labels, 0, shuffle=True)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))
    assert all(x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 for x, _ in batches)
    assert [len(y) for _, y in collect(images, labels, 0, shuffle=True, drop_last=True)] == [16] * 3
    assert len(collect(images, labels, 0, shuffle=True, max_batches=2)) == 2
    assert len(collect(images, labels, 0, shuffle=False, drop_last=True, max_batches=9)) == 3


def test_batches_are_deterministic_under_a_seed():
    images, labels = make_data()
    a = collect(images, labels, 7, shuffle=True)
    b = collect(images, labels, 7, shuffle=True)
    c = collect(images, labels, 8, shuffle=True)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][1], c[0][1])


def test_unshuffled_eval_batches_are_the_normalised_images_in_order():
    images, labels = make_data(side=16)
    batches = collect(
        images, labels, None, shuffle=False, augment=BatchAugment(16, MEAN, STD, train=False)
    )
    x = torch.cat([x for x, _ in batches])
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    torch.testing.assert_close(x, plain_normalise(images), rtol=1e-5, atol=1e-5)


def test_batch_pixels_follow_their_labels():
    # Each image is constant = its label; after shuffling, pixel and label must still agree.
    n = 40
    labels = torch.arange(n, dtype=torch.int64)
    images = (labels * 5).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 18, 18).contiguous()
    aug = BatchAugment(16, (0.0,), (1 / 255,), train=True, hflip=True)
    for x, y in collect(images, labels, 1, shuffle=True, augment=aug):
        torch.testing.assert_close(x.amin(dim=(1, 2, 3)), (y * 5).float(), atol=1e-3, rtol=0)
        torch.testing.assert_close(x.amax(dim=(1, 2, 3)), (y * 5).float(), atol=1e-3, rtol=0)


def test_mismatched_lengths_are_refused():
    images, labels = make_data()
    with pytest.raises(ValueError, match="labels"):
        collect(images, labels[:-1], 0, shuffle=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_are_deterministic_and_on_device():
    images, labels = make_data()
    aug = BatchAugment(16, MEAN, STD, train=True, dtype=torch.bfloat16, channels_last=True)

    def run(seed):
        return list(
            iterate_batches(
                images, labels, 16, shuffle=True, generator=seeded(seed), device="cuda", augment=aug
            )
        )

    a, b = run(3), run(3)
    assert a[0][0].is_cuda and a[0][1].is_cuda and a[0][0].dtype == torch.bfloat16
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not math.isnan(a[0][0].float().sum().item())
