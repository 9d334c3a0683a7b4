"""Benchmark the vectorised MCL loss against the naive per-row reference (CPU by default).

Usage::

    PYTHONPATH=. python experiments/bench_mcl_loss.py [--images 256] [--dim 128] [--classes 10] [--device cpu]

A batch of ``--images`` images in 4 rotations (``N = 4 * images`` items, two views each, so a
``2N x 2N`` similarity matrix) with random class labels; times forward and forward+backward of
both implementations with the same partners and prints a table plus their largest difference.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the benchmarks' shared helpers
import _bench_common as common
from _mcl_per_row_loss import naive_mcl_loss

from anomalib_firm.models.image.mcl.loss import MaskedContrastiveLoss, sample_partners


def timed_ms(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median wall time of ``step`` in milliseconds over ``repeats`` runs, after one warm-up call."""
    return 1e3 * common.time_per_call(step, device, min_repeats=repeats, min_seconds=0.0, max_repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images per batch (items = 4 x images)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of the vectorised loss")
    parser.add_argument("--naive-repeats", type=int, default=2, help="timed runs of the naive loss")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    classes = torch.randint(args.classes, (args.images,), generator=generator)
    labels = torch.cat([classes + args.classes * rotation for rotation in range(4)]).to(device)
    num_items = labels.shape[0]
    z1 = torch.randn(num_items, args.dim, generator=generator).to(device)
    z2 = (z1.cpu() + 0.5 * torch.randn(num_items, args.dim, generator=generator)).to(device)
    z1 = torch.nn.functional.normalize(z1, dim=1).requires_grad_()
    z2 = torch.nn.functional.normalize(z2, dim=1).requires_grad_()
    partners = sample_partners(labels.cpu(), generator=generator).to(device)
    loss_fn = MaskedContrastiveLoss(num_classes=args.classes)

    def vectorised() -> torch.Tensor:
        return loss_fn.forward_parts(z1, z2, labels, partners=partners).loss

    def naive() -> torch.Tensor:
        return naive_mcl_loss(z1, z2, labels, partners, args.classes)[0]

    def forward_backward(loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            z1.grad = z2.grad = None
            loss().backward()

        return step

    def forward_only(loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                loss()

        return step

    with torch.no_grad():
        difference = (vectorised() - naive()).abs().item()
    rows = []
    for name, loss, repeats in (("vectorised", vectorised, args.repeats), ("naive per-row", naive, args.naive_repeats)):
        rows.append(
            (name, timed_ms(forward_only(loss), repeats, device), timed_ms(forward_backward(loss), repeats, device))
        )

    print(
        f"MCL loss, N = {num_items} items (4 rotations x {args.images} images), 2N = {2 * num_items} rows, "
        f"D = {args.dim}, C = {args.classes}, device {device}"
    )
    print(common.hardware_description(device))
    naive_total = rows[1][2]
    table = [(name, f"{forward:.1f}", f"{total:.1f}", f"{naive_total / total:.1f}x") for name, forward, total in rows]
    print(common.format_table(["implementation", "forward ms", "fwd+bwd ms", "speed-up (fwd+bwd)"], table))
    print(f"|vectorised - naive| on the loss: {difference:.2e}")


if __name__ == "__main__":
    main()
