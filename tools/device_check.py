"""The GPU acceptance in one command: training speed, memory, a full-protocol epoch, export parity.

Meant for the first minutes on a lent CUDA GPU (one H100/H200: under 8 minutes), and runnable
anywhere with ``--dry-run`` (the same code on the CPU with tiny sizes, a few seconds; a test
runs it). One table at the end; every section's failure is reported in it, the others still run.

Sections:

1. speed: FIRM (32 and 512 items per step), MCL (1,024 items) and MSC (ResNet-152 and
   EfficientNet-Lite0, 224 px, 64 images) trained by the package's pipeline (bf16 autocast and
   channels_last where native, batched on-device views) and by the paper-style pipeline (PIL
   transforms in DataLoader workers, fp32): items/s, the ratio, peak GPU memory; FIRM's large
   batch also with the compiled step (``compile_step=True``). The code is
   ``tools/benchmark_training_speed.py``'s; images are scikit-learn's digits (no file needed).
2. full-protocol epoch: the package's FIRM step at the ``full`` Fashion-MNIST protocol's shape
   (32 px, batches of 8 images = 32 items, 6,000 normal images = 750 steps), one epoch timed
   and extrapolated to the paper's 2,000 epochs. The step only: no Trainer, no validation.
   Content does not change the speed, so digits stand in for Fashion-MNIST.
3. export parity: a FIRM trained for one epoch on the device through anomalib's Engine
   (digit 0 normal), exported to OpenVINO; the largest difference of the normalised image score
   between OpenVINO (CPU, f32) and the eager module (pre-processing, network, scorer and
   normalisation, as exported) on the test images.

Usage (from the repository root)::

    bash tools/device_check.sh            # on a CUDA machine
    bash tools/device_check.sh --dry-run  # anywhere: CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common
import benchmark_training_speed as speed

#: Rows of the final table: (section, setting, result).
Row = tuple[str, str, str]


def speed_rows(device: torch.device, dry_run: bool) -> list[Row]:
    """Section 1: both pipelines on every model's paper-scale case (tiny ones in a dry run)."""
    if dry_run:
        cases = [
            speed.Case("firm", "resnet18_cifar", 16, 8),
            speed.Case("mcl", "resnet18_cifar", 16, 8),
            speed.Case("msc", "resnet18", 32, 4),
        ]
        timing = {"warmup": 0, "steps": 1, "min_steps": 1, "min_seconds": 0.0, "max_steps": 1, "workers": 0}
    else:
        cases = [
            speed.Case("firm", "resnet18_cifar", 32, 32),
            speed.Case("firm", "resnet18_cifar", 32, 512),
            speed.Case("mcl", "resnet34_cifar", 32, 1024),
            speed.Case("msc", "resnet152", 224, 64),
            speed.Case("msc", "efficientnet_lite0", 224, 64),
        ]
        timing = {"warmup": 10, "steps": None, "min_steps": 20, "min_seconds": 8.0, "max_steps": 300, "workers": 8}
    args = argparse.Namespace(seed=0, **timing)
    rows: list[Row] = []
    images_by_size: dict[int, torch.Tensor] = {}
    for case in cases:
        if case.image_size not in images_by_size:
            images_by_size[case.image_size] = common.load_normal_images("digits", "0", case.image_size, 2048)
        results = {}
        # The compiled step (compile_step=True) once, on FIRM's large batch (compiling costs about a minute;
        # not in the dry run, where tests/test_compiled_step.py covers the path).
        compiled = not dry_run and case.model == "firm" and case.batch_items >= 512
        for pipeline in ("ours", "ours compiled", "paper-style") if compiled else ("ours", "paper-style"):
            try:
                results[pipeline] = speed.measure(case, pipeline, images_by_size[case.image_size], args, device)
            except Exception as error:  # reported in the table; the other cases still run
                rows.append(("speed", f"{case.label} {case.batch_items} items {pipeline}", f"FAILED {error!r}"))
        if "ours compiled" in results:
            rows.append(
                (
                    "speed",
                    f"{case.label} {case.image_size} px {case.batch_items} items, ours compiled",
                    f"{results['ours compiled'].items_per_second:.0f} items/s",
                )
            )
        ours, paper = results.get("ours"), results.get("paper-style")
        if ours is not None:
            memory = "" if ours.peak_memory_gib is None else f", peak {ours.peak_memory_gib:.2f} GiB"
            ratio = f", {ours.items_per_second / paper.items_per_second:.1f}x paper-style" if paper else ""
            precision = "bf16" if speed.native_bf16(device) else "fp32"
            rows.append(
                (
                    "speed",
                    f"{case.label} {case.image_size} px {case.batch_items} items, ours ({precision})",
                    f"{ours.items_per_second:.0f} items/s{ratio}{memory}",
                )
            )
        if paper is not None:
            memory = "" if paper.peak_memory_gib is None else f", peak {paper.peak_memory_gib:.2f} GiB"
            rows.append(
                (
                    "speed",
                    f"{case.label} {case.image_size} px {case.batch_items} items, paper-style (fp32)",
                    f"{paper.items_per_second:.0f} items/s{memory}",
                )
            )
    return rows


def full_epoch_rows(device: torch.device, dry_run: bool) -> list[Row]:
    """Section 2: one epoch of FIRM's ``full`` Fashion-MNIST protocol (step only), extrapolated to 2,000."""
    image_size, images_per_step, num_images, epochs = (16, 2, 8, 2000) if dry_run else (32, 8, 6000, 2000)
    case = speed.Case("firm", "resnet18_cifar", image_size, 4 * images_per_step)
    common.seed_all(0)
    digits = common.load_normal_images("digits", "0", image_size, 2048)
    normal = digits[torch.arange(num_images) % len(digits)].to(device)  # repeated up to the class's size
    module = speed.build_module(case).to(device).train()
    module.prepare_training()
    step = speed.ours_step(module, case, normal, device)
    steps = math.ceil(num_images / images_per_step)
    seconds, _ = common.time_steps(step, device, warmup=min(10, steps), steps=steps)
    total_hours = seconds * epochs / 3600
    return [
        (
            "full epoch",
            f"FIRM {image_size} px, {num_images} images, {images_per_step} images/step ({steps} steps)",
            f"{seconds:.1f} s/epoch -> {total_hours:.1f} h for {epochs} epochs (one class)",
        )
    ]


def export_rows(device: torch.device, dry_run: bool) -> list[Row]:
    """Section 3: train one epoch on the device, export to OpenVINO, compare scores with eager PyTorch."""
    import numpy as np
    from anomalib.deploy import ExportType, OpenVINOInferencer
    from anomalib.engine import Engine

    from anomalib_firm.data import Digits
    from anomalib_firm.models import Firm

    image_size = 16
    with tempfile.TemporaryDirectory() as workdir:
        datamodule = Digits(
            category="0", train_batch_size=16 if dry_run else 32, max_test_images=40 if dry_run else None
        )
        model = Firm(image_size=image_size, visualizer=False, **({"head_hidden_dim": 64} if dry_run else {}))
        engine = Engine(
            max_epochs=1,
            accelerator=device.type if device.type == "cpu" else "gpu",
            devices=1,
            default_root_dir=workdir,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        engine.fit(model=model, datamodule=datamodule)
        model = model.cpu().eval()
        model.model.to(memory_format=torch.contiguous_format)
        exported = engine.export(
            model=model, export_type=ExportType.OPENVINO, export_root=workdir, input_size=(image_size, image_size)
        )
        datamodule.setup("test")
        images = torch.cat([batch.image for batch in datamodule.test_dataloader()])
        with torch.no_grad():  # the whole module: resize, network, scorer and score normalisation, as exported
            torch_scores = model(images).pred_score.float().numpy()
        inferencer = OpenVINOInferencer(exported, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
        openvino_scores = np.concatenate([inferencer.predict(image[None]).pred_score.reshape(-1) for image in images])
    difference = float(np.abs(openvino_scores - torch_scores).max())
    return [
        (
            "export",
            f"FIRM trained 1 epoch on {device.type}, OpenVINO f32 vs eager, {len(images)} test images",
            f"max |score difference| {difference:.2e}",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the sections, print one table; exit status 1 when a section failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes: checks the code path, measures nothing"
    )
    parser.add_argument(
        "--sections", nargs="+", choices=("speed", "full", "export"), default=["speed", "full", "export"]
    )
    args = parser.parse_args(argv)
    common.quiet_warnings()
    device = torch.device("cpu") if args.dry_run else common.resolve_device("cuda")
    print(common.hardware_description(device), flush=True)
    sections: dict[str, Callable[[torch.device, bool], list[Row]]] = {
        "speed": speed_rows,
        "full": full_epoch_rows,
        "export": export_rows,
    }
    rows: list[Row] = []
    failed = False
    for name in args.sections:
        start = time.perf_counter()
        try:
            rows += sections[name](device, args.dry_run)
        except Exception as error:  # one failing section must not hide the others
            failed = True
            traceback.print_exc()
            rows.append((name, "section", f"FAILED {type(error).__name__}: {error}"))
        print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
    failed = failed or any(result.startswith("FAILED") for _, _, result in rows)
    print()
    print(f"device check{' (dry run: CPU, tiny sizes, not a measurement)' if args.dry_run else ''}")
    print(common.format_table(["section", "setting", "result"], [list(row) for row in rows]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
