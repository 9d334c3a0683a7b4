"""Batched, on-device image augmentations with an independent random draw per sample.

Every transform takes a float batch ``(B, C, H, W)`` in [0, 1] on any device and returns a
batch of the same dtype and device, so contrastive views are made on the accelerator for the
whole batch at once (no per-image PIL work in data-loader workers). Semantics follow
torchvision's per-image transforms (``RandomResizedCrop``, ``ColorJitter``, ``GaussianBlur``,
``RandomGrayscale``, flips); random numbers come from torch's global generator, so
``seed_everything`` makes them reproducible.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _uniform(low: float, high: float, size: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Uniform samples in [low, high) with ``like``'s device, float32."""
    return torch.rand(size, device=like.device) * (high - low) + low


def _per_sample(mask_or_values: torch.Tensor) -> torch.Tensor:
    """Reshape (B,) to (B, 1, 1, 1) for broadcasting over images."""
    return mask_or_values.view(-1, 1, 1, 1)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images: (B, 3, H, W) -> (B, 1, H, W)."""
    weights = images.new_tensor(_GREY_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def random_grayscale(images: torch.Tensor, probability: float) -> torch.Tensor:
    """Replace each image by its luma (kept 3-channel) with ``probability``."""
    grey = torch.rand(images.shape[0], device=images.device) < probability
    return torch.where(_per_sample(grey), grayscale(images).expand_as(images), images)


def sample_crop_boxes(
    batch_size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    like: torch.Tensor,
    attempts: int = 10,
) -> torch.Tensor:
    """Draw RandomResizedCrop boxes as fractions of the image: (B, 4) = (x0, y0, width, height).

    As torchvision: area fraction ~ U(scale), log aspect ratio ~ U(log ratio), first of
    ``attempts`` draws that fits; if none fits, the largest centred box within ``ratio``.
    """
    area = _uniform(scale[0], scale[1], (batch_size, attempts), like)
    log_ratio = _uniform(math.log(ratio[0]), math.log(ratio[1]), (batch_size, attempts), like)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect)
    height = torch.sqrt(area / aspect)
    fits = (width <= 1) & (height <= 1)
    first_fit = torch.argmax(fits.int(), dim=1, keepdim=True)  # 0 when none fits (handled below)
    width = width.gather(1, first_fit).squeeze(1)
    height = height.gather(1, first_fit).squeeze(1)
    any_fit = fits.any(dim=1)
    fallback_width = min(1.0, ratio[1]) if ratio[1] < 1 else 1.0
    fallback_height = min(1.0, 1 / ratio[0]) if ratio[0] > 1 else 1.0
    width = torch.where(any_fit, width, torch.full_like(width, fallback_width))
    height = torch.where(any_fit, height, torch.full_like(height, fallback_height))
    x0 = torch.rand(batch_size, device=like.device) * (1 - width)
    y0 = torch.rand(batch_size, device=like.device) * (1 - height)
    return torch.stack([x0, y0, width, height], dim=1)


def crop_and_resize(
    images: torch.Tensor,
    boxes: torch.Tensor,
    output_size: int | tuple[int, int],
    flip_horizontal: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop per-sample boxes and resize them to ``output_size`` with bilinear sampling.

    Args:
        images: (B, C, H, W).
        boxes: (B, 4) fractional (x0, y0, width, height) as from :func:`sample_crop_boxes`.
        output_size: Output side or (height, width).
        flip_horizontal: Optional (B,) bool, mirror those crops (folded into the same sampling).

    Returns:
        (B, C, out_h, out_w).
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    x0, y0, width, height = boxes.to(images.dtype).unbind(dim=1)
    scale_x = width if flip_horizontal is None else torch.where(flip_horizontal, -width, width)
    zeros = torch.zeros_like(width)
    # affine_grid maps output coords in [-1, 1] to input coords in [-1, 1].
    theta = torch.stack(
        [
            torch.stack([scale_x, zeros, 2 * x0 + width - 1], dim=1),
            torch.stack([zeros, height, 2 * y0 + height - 1], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    red, green, blue = images.unbind(dim=1)
    max_c = images.amax(dim=1)
    min_c = images.amin(dim=1)
    chroma = max_c - min_c
    saturation = chroma / torch.where(max_c == 0, torch.ones_like(max_c), max_c)
    safe_chroma = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    red_c, green_c, blue_c = ((max_c - channel) / safe_chroma for channel in (red, green, blue))
    is_red = max_c == red
    is_green = (max_c == green) & ~is_red
    hue = torch.where(is_red, blue_c - green_c, torch.where(is_green, 2.0 + red_c - blue_c, 4.0 + green_c - red_c))
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack([hue, saturation, max_c], dim=1)


def _hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = images.unbind(dim=1)
    sector = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    sector = sector.long() % 6
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    # For each sector, which of (value, q, p, t) is red, green, blue.
    candidates = torch.stack([value, q, p, t], dim=1)  # (B, 4, H, W)
    table = torch.tensor(
        [[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]], device=images.device
    )  # (6, 3)
    index = table[sector].permute(0, 3, 1, 2)  # (B, 3, H, W)
    return candidates.gather(1, index)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift the hue of each RGB image by ``shift`` (B,) in [-0.5, 0.5] turns."""
    hsv = _rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, :1] + _per_sample(shift), 1.0)
    return _hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1))


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = _per_sample(factor)
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def color_jitter(
    images: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    probability: float = 1.0,
) -> torch.Tensor:
    """Torchvision's ColorJitter per sample: four random factors, applied in a random order.

    Each image draws its own factors (brightness, contrast and saturation in ``[1 - s, 1 + s]``,
    hue shift in ``[-hue, hue]``) and its own order of the four operations; the whole jitter
    is applied with ``probability``.
    """
    batch = images.shape[0]
    factors = [
        _uniform(max(0.0, 1 - brightness), 1 + brightness, (batch,), images),
        _uniform(max(0.0, 1 - contrast), 1 + contrast, (batch,), images),
        _uniform(max(0.0, 1 - saturation), 1 + saturation, (batch,), images),
        _uniform(-hue, hue, (batch,), images),
    ]
    enabled = [brightness > 0, contrast > 0, saturation > 0, hue > 0]
    order = torch.argsort(torch.rand(batch, 4, device=images.device), dim=1)
    out = images
    for stage in range(4):
        op_of_sample = _per_sample(order[:, stage])
        for op in range(4):
            if not enabled[op]:
                continue
            if op == 0:
                candidate = (out * _per_sample(factors[0])).clamp(0, 1)
            elif op == 1:
                mean = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
                candidate = _blend(out, mean, factors[1])
            elif op == 2:
                candidate = _blend(out, grayscale(out), factors[2])
            else:
                candidate = adjust_hue(out, factors[3])
            out = torch.where(op_of_sample == op, candidate, out)
    apply = torch.rand(batch, device=images.device) < probability
    return torch.where(_per_sample(apply), out, images)


def gaussian_blur(
    images: torch.Tensor,
    kernel_size: int,
    sigma: tuple[float, float],
    probability: float = 1.0,
) -> torch.Tensor:
    """Blur each image with its own sigma ~ U(sigma), with ``probability`` (reflect padding).

    One grouped separable convolution over the whole batch: each (image, channel) plane gets
    the kernel of its image.
    """
    if kernel_size % 2 == 0 or kernel_size < 1:
        msg = f"Gaussian blur kernel_size must be odd and positive, got {kernel_size}."
        raise ValueError(msg)
    batch, channels, height, width = images.shape
    sigmas = _uniform(sigma[0], sigma[1], (batch,), images).to(images.dtype)
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - kernel_size // 2
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigmas[:, None] ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (B*C, k)
    pad = kernel_size // 2
    planes = images.reshape(1, batch * channels, height, width)
    planes = F.pad(planes, (pad, pad, pad, pad), mode="reflect" if min(height, width) > pad else "replicate")
    planes = F.conv2d(planes, kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    planes = F.conv2d(planes, kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    blurred = planes.view(batch, channels, height, width)
    apply = torch.rand(batch, device=images.device) < probability
    return torch.where(_per_sample(apply), blurred, images)


class ContrastiveViews(nn.Module):
    """One random view per image: crop -> flip -> colour jitter -> greyscale -> blur.

    The pipeline shared by FIRM, MSC and MCL; each model sets its parameters (see
    each model's ``views.py``). Disabled steps cost nothing.

    Args:
        output_size: Side of the output views.
        crop_scale: Area fraction range of RandomResizedCrop.
        crop_ratio: Aspect ratio range of RandomResizedCrop.
        horizontal_flip: Probability of a horizontal flip.
        jitter: (brightness, contrast, saturation, hue) strengths; all 0 disables.
        jitter_probability: Probability of applying the colour jitter.
        grayscale_probability: Probability of greyscale.
        blur_probability: Probability of Gaussian blur.
        blur_sigma: Range of the blur's sigma.
        blur_kernel_size: Odd blur kernel size; 0 picks about 10% of ``output_size``.
    """

    def __init__(
        self,
        output_size: int,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        horizontal_flip: float = 0.0,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_probability: float = 0.8,
        grayscale_probability: float = 0.0,
        blur_probability: float = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int = 0,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.crop_scale = crop_scale
        self.crop_ratio = crop_ratio
        self.horizontal_flip = horizontal_flip
        self.jitter = jitter
        self.jitter_probability = jitter_probability
        self.grayscale_probability = grayscale_probability
        self.blur_probability = blur_probability
        self.blur_sigma = blur_sigma
        self.blur_kernel_size = blur_kernel_size or (max(3, int(0.1 * output_size)) // 2 * 2 + 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map (B, 3, H, W) in [0, 1] to views (B, 3, output_size, output_size) in [0, 1]."""
        batch = images.shape[0]
        boxes = sample_crop_boxes(batch, self.crop_scale, self.crop_ratio, images)
        flip = torch.rand(batch, device=images.device) < self.horizontal_flip if self.horizontal_flip else None
        views = crop_and_resize(images, boxes, self.output_size, flip)
        if any(strength > 0 for strength in self.jitter) and self.jitter_probability > 0:
            views = color_jitter(views, *self.jitter, probability=self.jitter_probability)
        if self.grayscale_probability > 0:
            views = random_grayscale(views, self.grayscale_probability)
        if self.blur_probability > 0:
            views = gaussian_blur(views, self.blur_kernel_size, self.blur_sigma, self.blur_probability)
        return views
