"""Two CPU processes (gloo) against one: global-batch losses, gradients, and the scorer fitted on rank 0.

One start of 2 workers runs every check (starting the processes costs more than the checks) and
writes what each rank computed (spawned, not forked: a forked child of a process that already ran
autograd fails, as the suite's earlier tests do); the test process computes the single-process values on the same
global batch and compares them. Tolerance: 1e-5 absolute on losses and gradients (float32; the
gathered and the single-process loss add the same terms in a different order).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from distributed_utils import spawned_ranks
from model_utils import random_training_batch, tiny_model
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F

from anomalib_firm.models.components.lifecycle.distributed import gather_batch
from anomalib_firm.models.image.firm.loss import FirmLoss
from anomalib_firm.models.image.mcl.loss import MaskedContrastiveLoss
from anomalib_firm.models.image.msc.loss import MeanShiftedContrastiveLoss

WORLD = 2
ITEMS_PER_RANK = 8
TOLERANCE = 1e-5


def _inputs() -> dict[str, torch.Tensor]:
    """The global batch: two views of 16 items (8 per rank), their flags and labels; a centre."""
    generator = torch.Generator().manual_seed(0)
    items = WORLD * ITEMS_PER_RANK
    return {
        "x1": torch.randn(items, 12, generator=generator),
        "x2": torch.randn(items, 12, generator=generator),
        "rotation_ids": torch.arange(items) % 4,
        "center": F.normalize(torch.randn(6, generator=generator), dim=0) * 0.5,
    }


def _network() -> nn.Module:
    torch.manual_seed(1)
    return nn.Linear(12, 6)


def _losses(gather: bool) -> dict[str, nn.Module]:
    return {
        "firm": FirmLoss(gather_distributed=gather),
        "firm_concat": FirmLoss(layout="concat", gather_distributed=gather),
        "mcl": MaskedContrastiveLoss(num_classes=1, gather_distributed=gather),
        "msc": MeanShiftedContrastiveLoss(angular_weight=1.0, gather_distributed=gather),
    }


def _loss(name: str, loss: nn.Module, z1: torch.Tensor, z2: torch.Tensor, inputs, rotation_ids) -> torch.Tensor:
    if name.startswith("firm"):
        return loss(z1, z2, rotation_ids == 0, None, rotation_ids)
    if name == "mcl":
        torch.manual_seed(5)  # the partners are drawn on rank 0 (seeded the same as the single process)
        return loss(z1, z2, rotation_ids)
    return loss(z1, z2, inputs["center"])


def _loss_and_gradients(name: str, loss: nn.Module, rows: slice, ddp: bool) -> tuple[float, torch.Tensor]:
    inputs = _inputs()
    network = _network()
    model = nn.parallel.DistributedDataParallel(network) if ddp else network
    z1 = F.normalize(model(inputs["x1"][rows]), dim=1)
    z2 = F.normalize(model(inputs["x2"][rows]), dim=1)
    value = _loss(name, loss, z1, z2, inputs, inputs["rotation_ids"][rows])
    value.backward()
    gradients = torch.cat([parameter.grad.flatten() for parameter in network.parameters()])
    return float(value.detach()), gradients


def _scorer_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in model.model.named_buffers()}


def _fit_firm_scorer(sync_batchnorm: bool, rank: int = 0) -> dict[str, torch.Tensor]:
    """A tiny FIRM (BatchNorm recalibration on) fitted on 2 batches; ranks above 0 start with other buffers."""
    torch.manual_seed(2)
    model = tiny_model("firm", bn_recalibration=True)
    if sync_batchnorm:
        model.model = nn.SyncBatchNorm.convert_sync_batchnorm(model.model)
    for _, buffer in model.model.named_buffers():
        if buffer.is_floating_point():
            buffer.add_(rank)  # another rank's statistics must not matter: rank 0's are broadcast
    model.fit_scorer_from_loader([random_training_batch(6, seed) for seed in range(2)])
    return _scorer_buffers(model)


def _worker(rank: int, port: int, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * ITEMS_PER_RANK, (rank + 1) * ITEMS_PER_RANK)
        results = {name: _loss_and_gradients(name, loss, rows, ddp=True) for name, loss in _losses(True).items()}
        # Uneven numbers of rows: values in rank order, each rank's rows get the sum of all ranks' gradients.
        local = torch.arange(3.0 + 2 * rank).requires_grad_()
        (gathered,) = gather_batch(local)
        (gathered * torch.arange(1.0, len(gathered) + 1)).sum().backward()
        results["uneven"] = (gathered.detach(), local.grad)
        results["scorer"] = _fit_firm_scorer(sync_batchnorm=True, rank=rank)
        torch.save(results, Path(output) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return spawned_ranks(_worker, tmp_path_factory.mktemp("ddp"), WORLD)


@pytest.mark.parametrize("name", ["firm", "firm_concat", "mcl", "msc"])
def test_global_batch_loss_and_gradients_over_two_ranks_equal_one_process(ranks, name):
    single_loss, single_gradients = _loss_and_gradients(name, _losses(False)[name], slice(None), ddp=False)
    for result in ranks:
        loss, gradients = result[name]
        assert loss == pytest.approx(single_loss, abs=TOLERANCE)
        torch.testing.assert_close(gradients, single_gradients, atol=TOLERANCE, rtol=0)
    # Not a trivial agreement: each rank's own half alone gives another loss.
    half_loss, _ = _loss_and_gradients(name, _losses(False)[name], slice(0, ITEMS_PER_RANK), ddp=False)
    assert abs(half_loss - single_loss) > 1e-3


def test_gather_of_uneven_batches_returns_gradients_to_their_rank(ranks):
    weights = torch.arange(1.0, 9.0)
    for rank, result in enumerate(ranks):
        gathered, gradient = result["uneven"]
        torch.testing.assert_close(gathered, torch.cat([torch.arange(3.0), torch.arange(5.0)]))
        start = 0 if rank == 0 else 3
        torch.testing.assert_close(gradient, WORLD * weights[start : start + 3 + 2 * rank])


def test_scorer_fitted_on_rank_zero_is_identical_on_every_rank(ranks):
    # Both ranks hold rank 0's fit (SyncBatchNorm layers recalibrated locally, no deadlock), which is
    # the single-process fit with plain BatchNorm.
    single = _fit_firm_scorer(sync_batchnorm=False)
    for result in ranks:
        assert result["scorer"].keys() == single.keys()
        for name, buffer in single.items():
            torch.testing.assert_close(result["scorer"][name], buffer, atol=0, rtol=0, msg=name)
    assert single["bank.features"].shape[1] == 12
