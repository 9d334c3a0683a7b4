"""Evaluation with two CPU processes (gloo) gives one process's numbers, whatever the split and batch sizes.

Lightning shards an evaluation split with a non-shuffling ``DistributedSampler``, which pads it by
repeating its first images (at most one repeat per process, as each process's last item); the models
drop the repeats. Each case below is a split size and batch size that leaves process 1 with no repeat,
a repeat in a fuller last batch, a last batch that is only the repeat (empty once dropped), or a whole
share that is the repeat (more processes than images). For each model, one start of two workers
validates (the post-processor's min, max and threshold) and tests (anomalib's image AUROC) every case
through a Lightning Trainer with the DDP strategy; the test process computes the same statistics from
the raw scores of one process on the same weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from distributed_utils import spawned_ranks
from model_utils import MODEL_NAMES, tiny_model
from torch import distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset

WORLD = 2
TRAIN_BATCH = 16
#: case -> (images in the evaluated split, evaluation batch size).
CASES = {
    "no repeat": (12, 4),
    "repeat in a fuller last batch": (11, 4),
    "last batch only the repeat": (9, 4),
    "whole share the repeat": (1, 4),
}


def _datamodule():
    from anomalib_firm.data import Digits

    datamodule = Digits(category=4, train_batch_size=TRAIN_BATCH, num_workers=0, seed=0)
    datamodule.setup()
    return datamodule


def _split(datamodule, images: int) -> Subset:
    """The first ``images`` of the test split, normal and anomalous alternating (both labels from 2 images on)."""
    labels = torch.as_tensor([item.gt_label for item in datamodule.test_data]).bool()
    normal, anomalous = torch.nonzero(~labels).flatten(), torch.nonzero(labels).flatten()
    alternating = torch.stack([normal[:images], anomalous[:images]], dim=1).flatten()[:images]
    return Subset(datamodule.test_data, alternating.tolist())


def _loader(datamodule, images: int, batch_size: int) -> DataLoader:
    return DataLoader(_split(datamodule, images), batch_size=batch_size, collate_fn=datamodule.test_data.collate_fn)


def _model(name: str):
    """A tiny model; FIRM and MCL without BatchNorm recalibration (seconds a fit, not what is tested here)."""
    torch.manual_seed(0)
    return tiny_model(name) if name == "msc" else tiny_model(name, bn_recalibration=False)


def _worker(rank: int, port: int, output: str) -> None:
    from lightning.pytorch import Trainer

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        datamodule = _datamodule()
        results = {}
        trainer = Trainer(
            accelerator="cpu",
            devices=WORLD,
            strategy="ddp",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        for name in MODEL_NAMES:
            model = _model(name)
            model.fit_scorer_from_loader(datamodule.train_dataloader())  # on rank 0, broadcast
            for case, (images, batch_size) in CASES.items():
                trainer.validate(model, dataloaders=_loader(datamodule, images, batch_size), verbose=False)
                post = model.post_processor
                statistics = torch.stack([post.image_min, post.image_max, post._image_threshold]).clone()
                tested = trainer.test(model, dataloaders=_loader(datamodule, images, batch_size), verbose=False)
                results[name, case] = (statistics, tested[0].get("image_AUROC", float("nan")))
        torch.save(results, Path(output) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return spawned_ranks(_worker, tmp_path_factory.mktemp("ddp_evaluation"), WORLD)


def _last_batch_of_rank_one(images: int, batch_size: int) -> tuple[int, int]:
    """(items, repeats) of process 1's last evaluation batch under Lightning's sampler."""
    share = len(DistributedSampler(range(images), num_replicas=WORLD, rank=1, shuffle=False))
    last = share % batch_size or batch_size
    positions = 1 + WORLD * torch.arange(share - last, share)  # the split positions process 1 reads last
    return last, int((positions >= images).sum())


def test_cases_cover_every_kind_of_padding():
    assert _last_batch_of_rank_one(*CASES["no repeat"]) == (2, 0)
    assert _last_batch_of_rank_one(*CASES["repeat in a fuller last batch"]) == (2, 1)
    assert _last_batch_of_rank_one(*CASES["last batch only the repeat"]) == (1, 1)
    assert _last_batch_of_rank_one(*CASES["whole share the repeat"]) == (1, 1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_two_processes_evaluate_every_image_once(ranks, name):
    from anomalib.data import ImageBatch
    from anomalib.metrics import F1AdaptiveThreshold
    from sklearn.metrics import roc_auc_score

    datamodule = _datamodule()
    model = _model(name)
    # One process fits from the same weights with the global batch (the recalibrated BatchNorm
    # statistics average per-batch ones; rank 0 reads the normal images in batches of both processes).
    single = _datamodule()
    single.train_batch_size = TRAIN_BATCH * WORLD
    model.fit_scorer_from_loader(single.train_dataloader())
    for case, (images, batch_size) in CASES.items():
        scores, labels = model.score_loader(_loader(datamodule, images, batch_size))
        threshold = F1AdaptiveThreshold(fields=["pred_score", "gt_label"])
        threshold.update(ImageBatch(image=torch.zeros(images, 3, 1, 1), pred_score=scores, gt_label=labels.bool()))
        expected = torch.stack([scores.min(), scores.max(), threshold.compute()])
        for rank, result in enumerate(ranks):
            statistics, auroc = result[name, case]
            torch.testing.assert_close(
                statistics, expected, atol=1e-5, rtol=1e-5, equal_nan=True, msg=f"{case}, rank {rank}"
            )
            if images > 1:
                assert auroc == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-6), case
