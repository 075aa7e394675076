"""Batched augmentation on the training device: whole batches at once, never per sample in Python.

Train: per-sample random-resized-crop boxes are drawn vectorised, one `torchvision.ops.roi_align`
call crops and resizes the whole batch (or, for `crop="padded"`, the batch is zero-padded and one
gather takes each sample's random crop), per-sample horizontal flips go through `torch.where`,
then the batch is normalised. Eval: center crop (a no-op for val/test, which are stored at
`image_size`) + normalise. All randomness comes from the generator passed in, so a seed makes a
batch reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.ops import roi_align

#: Attempts per sample before falling back to the center crop (as torchvision's RandomResizedCrop).
CROP_ATTEMPTS = 10


@dataclass(frozen=True)
class _Draws:
    """Random draws are made for `total` samples; `rows` of them apply to the images at hand."""

    rows: slice
    total: int


class BatchAugment:
    """uint8 (B, C, S, S) batch -> normalised float (B, C, image_size, image_size) batch.

    Train mode follows torchvision's RandomResizedCrop semantics, vectorised: for each sample,
    `CROP_ATTEMPTS` (area fraction ~ U(crop_scale), log aspect ratio ~ U(log crop_ratio)) pairs
    are drawn at once and the first box that fits the image is used; samples with no fitting box
    get the center crop with the ratio clamped into `crop_ratio` (the whole image for square
    inputs). Approximations, documented: box sides and positions are continuous (torchvision
    rounds them to whole pixels), and resampling is roi_align's bilinear sampling with
    `sampling_ratio` samples per output pixel and axis (default -1 = adaptive,
    ceil(box side / image_size), which averages samples when shrinking, like an antialias
    filter; with 1 it equals `F.interpolate(mode="bilinear", align_corners=False)`).

    `crop="padded"` is torchvision's RandomCrop(image_size, padding=crop_padding) instead, the
    standard CIFAR augmentation: each image is zero-padded by `crop_padding` px on every side
    (black, before normalisation) and an `image_size` square is cut at a position drawn
    uniformly over all integer offsets (exact pixels, no resampling).

    Eval mode (`train=False`, also used for training when augmentation is off) center-crops to
    `image_size` if the input is larger (torchvision's CenterCrop offsets) and normalises.

    `dtype` and `channels_last` shape the output for the model (e.g. bf16 + channels_last on
    CUDA); the arithmetic itself runs in float32.
    """

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        *,
        crop: str = "random_resized",
        crop_padding: int = 4,
        sampling_ratio: int = -1,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {mean} vs {std}")
        if not 0 < crop_scale[0] <= crop_scale[1]:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max, got {crop_scale}")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {crop_ratio}")
        if crop not in ("random_resized", "padded") or crop_padding < 0:
            raise ValueError(
                f"crop must be random_resized or padded with crop_padding >= 0, got {crop!r}, "
                f"{crop_padding}"
            )
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.train = bool(train)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.hflip = bool(hflip)
        self.crop_mode = crop
        self.crop_padding = int(crop_padding)
        self.sampling_ratio = int(sampling_ratio)
        self.dtype = dtype
        self.channels_last = bool(channels_last)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        if not self.train:
            return f"BatchAugment(eval, image_size={self.image_size})"
        if self.crop_mode == "padded":
            return (
                f"BatchAugment(train, image_size={self.image_size}, padded crop "
                f"{self.crop_padding} px, hflip={self.hflip})"
            )
        return (
            f"BatchAugment(train, image_size={self.image_size}, crop_scale={self.crop_scale}, "
            f"crop_ratio={self.crop_ratio}, hflip={self.hflip})"
        )

    # ------------------------------------------------------------------ public
    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None,
        rows: slice | None = None, total: int | None = None,
    ) -> torch.Tensor:
        """Augment (train) or center-crop (eval) and normalise a uint8 (B, C, H, W) batch.

        Train randomness is drawn from `generator` (on the batch's device; None = the default
        generator) in a fixed order: crop boxes (see `sample_boxes`), then flips.

        With `rows`, `images` are those rows of a batch of `total` samples (a data-parallel
        rank's part): the draws are the whole batch's and these rows' are used, so each sample
        is augmented exactly as in the whole batch, and the generator advances the same.
        """
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(
                f"expected a uint8 (B, C, H, W) batch, got {images.dtype} {tuple(images.shape)}"
            )
        if images.shape[1] != len(self.mean):
            raise ValueError(
                f"batch has {images.shape[1]} channels, mean/std have {len(self.mean)}"
            )
        draws = _Draws(rows or slice(None), len(images) if total is None else total)
        if self.train and self.crop_mode == "padded":
            x = self._flip(self.padded_crop(images, generator, draws).to(torch.float32),
                           generator, draws)
        elif self.train:
            x = self._flip(self._random_resized_crop(images, generator, draws), generator, draws)
        else:
            x = self._center_crop(images).to(torch.float32)
        mean, inv_std = self._normalisers(x.device)
        x = x.sub_(mean).mul_(inv_std)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(dtype=self.dtype, memory_format=memory_format)

    def sample_boxes(
        self,
        batch_size: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """(B, 4) float boxes (x1, y1, x2, y2) in pixel-edge coordinates, vectorised RRC.

        Draws from `generator`, in order: area fractions (B, attempts), log ratios (B, attempts),
        positions (B, 2).
        """
        if device is None and generator is not None:
            device = generator.device
        shape = (batch_size, CROP_ATTEMPTS)
        area = height * width
        lo, hi = self.crop_scale
        scale = torch.rand(shape, generator=generator, device=device) * (hi - lo) + lo
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        log_ratio = torch.rand(shape, generator=generator, device=device) * (log_hi - log_lo)
        ratio = torch.exp(log_ratio + log_lo)
        w = torch.sqrt(area * scale * ratio)
        h = torch.sqrt(area * scale / ratio)
        fits = (w <= width) & (h <= height)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting attempt
        w = w.gather(1, first).squeeze(1)
        h = h.gather(1, first).squeeze(1)

        # Fallback: the largest center box with its ratio clamped into crop_ratio.
        in_ratio = width / height
        if in_ratio < self.crop_ratio[0]:
            fw, fh = float(width), width / self.crop_ratio[0]
        elif in_ratio > self.crop_ratio[1]:
            fw, fh = height * self.crop_ratio[1], float(height)
        else:
            fw, fh = float(width), float(height)
        any_fit = fits.any(dim=1)
        w = torch.where(any_fit, w, torch.full_like(w, fw))
        h = torch.where(any_fit, h, torch.full_like(h, fh))

        position = torch.rand((batch_size, 2), generator=generator, device=device)
        x1 = position[:, 0] * (width - w)
        y1 = position[:, 1] * (height - h)
        # A fallback box is centred whatever the draw (width - w etc. may be 0 anyway).
        x1 = torch.where(any_fit, x1, (width - w) / 2)
        y1 = torch.where(any_fit, y1, (height - h) / 2)
        return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)

    def crop(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Crop box b of sample b and resize it to image_size (one roi_align call), float32."""
        x = images.to(torch.float32)
        index = torch.arange(len(boxes), device=x.device, dtype=x.dtype)[:, None]
        rois = torch.cat([index, boxes.to(device=x.device, dtype=x.dtype)], dim=1)
        return roi_align(
            x,
            rois,
            output_size=(self.image_size, self.image_size),
            spatial_scale=1.0,
            sampling_ratio=self.sampling_ratio,
            aligned=True,  # box edges are pixel edges: (0, 0, W, H) is exactly the image
        )

    # ------------------------------------------------------------------ internals
    def padded_crop(
        self, images: torch.Tensor, generator: torch.Generator | None = None,
        draws: _Draws | None = None,
    ) -> torch.Tensor:
        """Zero-pad by `crop_padding` and cut one random `image_size` square per sample (uint8
        in, uint8 out). Draws from `generator`, in order: row offsets (B,), column offsets (B,).
        """
        b, _, height, width = images.shape
        pad, size = self.crop_padding, self.image_size
        if height + 2 * pad < size or width + 2 * pad < size:
            raise ValueError(
                f"a {height}x{width} batch padded by {pad} px is smaller than image_size {size}"
            )
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        device = images.device
        draws = draws or _Draws(slice(None), b)
        top = torch.randint(0, height + 2 * pad - size + 1, (draws.total,), generator=generator,
                            device=device)[draws.rows]
        left = torch.randint(0, width + 2 * pad - size + 1, (draws.total,), generator=generator,
                             device=device)[draws.rows]
        offsets = torch.arange(size, device=device)
        rows = (top[:, None] + offsets)[:, :, None]  # (B, size, 1)
        cols = (left[:, None] + offsets)[:, None, :]  # (B, 1, size)
        sample = torch.arange(b, device=device)[:, None, None]
        # Advanced indices around the channel slice put their dims first: (B, size, size, C).
        return padded[sample, :, rows, cols].permute(0, 3, 1, 2)

    def _random_resized_crop(
        self, images: torch.Tensor, generator: torch.Generator | None, draws: _Draws
    ) -> torch.Tensor:
        _, _, height, width = images.shape
        boxes = self.sample_boxes(draws.total, height, width, generator, device=images.device)
        return self.crop(images, boxes[draws.rows])

    def _flip(self, x: torch.Tensor, generator: torch.Generator | None,
              draws: _Draws) -> torch.Tensor:
        """Flip each sample horizontally with probability 1/2 (one draw per sample)."""
        if not self.hflip:
            return x
        flip = (torch.rand(draws.total, generator=generator, device=x.device) < 0.5)[draws.rows]
        if x.device.type == "cpu":
            # Flip only the drawn samples, in place: the `where` below flips and then
            # selects over the whole batch (a fifth of the augmentation at 224 px on CPU).
            chosen = flip.nonzero().squeeze(1)
            x.index_copy_(0, chosen, x.index_select(0, chosen).flip(-1))
            return x
        # No `nonzero` on an accelerator: it would wait for the device every batch.
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def _center_crop(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        size = self.image_size
        if height < size or width < size:
            raise ValueError(
                f"eval batch is {height}x{width}, smaller than image_size {size}; "
                "val/test splits are stored at image_size"
            )
        # torchvision's CenterCrop offsets (Python round: half to even).
        top = int(round((height - size) / 2.0))
        left = int(round((width - size) / 2.0))
        return images[..., top : top + size, left : left + size]

    def _normalisers(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1/std) in 0..255 units, shaped (1, C, 1, 1), cached per device."""
        if device not in self._stats:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device) * 255
            inv_std = 1 / (torch.tensor(self.std, dtype=torch.float32, device=device) * 255)
            self._stats[device] = (mean.view(1, -1, 1, 1), inv_std.view(1, -1, 1, 1))
        return self._stats[device]
