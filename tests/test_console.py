"""Quiet console output (``anomalib_firm.console``): silenced at the source, only while our code runs, then restored."""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import types
import warnings

import pytest
import torch
from model_utils import IMAGE_SIZE, tiny_model

from anomalib_firm._hook import _ChainedLoader
from anomalib_firm.console import (
    EXPORT_LOG_LEVELS,
    InputError,
    dropped_records,
    ignored_warnings,
    input_errors_made,
    logger_levels,
    quiet_cli_run,
    quoted_input_error,
    single_console_handler,
)
from anomalib_firm.models.components.lifecycle.contrastive_mixin import NormalBatch

EXPORT_LOGGERS = tuple(EXPORT_LOG_LEVELS)


class _Records(logging.Handler):
    """Collects every record that reaches the logger it is added to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def info_root():
    """The root logger at INFO with a collecting handler, as anomalib's CLI configures it."""
    root = logging.getLogger()
    level = root.level
    handler = _Records()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_ignored_warnings_removes_only_its_own_filters():
    with warnings.catch_warnings():  # isolate this test's filter changes
        warnings.simplefilter("always")
        before = list(warnings.filters)
        with ignored_warnings([(FutureWarning, r"old thing")]):
            warnings.filterwarnings("ignore", message="added inside")  # e.g. by a library imported meanwhile
            with warnings.catch_warnings(record=True) as inside:
                warnings.simplefilter("always")
                warnings.filterwarnings("ignore", message=r"old thing", category=FutureWarning)
                warnings.warn("old thing is deprecated", FutureWarning, stacklevel=1)
            with warnings.catch_warnings(record=True) as shown:
                warnings.warn("old thing is deprecated", FutureWarning, stacklevel=1)
                warnings.warn("old thing is deprecated", UserWarning, stacklevel=1)  # other category: shown
        assert inside == []
        assert [type(w.message) for w in shown] == [UserWarning]
        assert [f for f in warnings.filters if f not in before] == [warnings.filters[0]]
        assert warnings.filters[0][1].pattern == "added inside"
        with warnings.catch_warnings(record=True) as after:
            warnings.warn("old thing is deprecated", FutureWarning, stacklevel=1)
        assert len(after) == 1


def test_logger_levels_raise_and_restore_but_keep_a_users_level():
    users = logging.getLogger("test_console.users")
    users.setLevel(logging.DEBUG)
    untouched = logging.getLogger("test_console.untouched")
    try:
        with logger_levels({"test_console.users": logging.ERROR, "test_console.untouched": logging.ERROR}):
            assert users.level == logging.DEBUG
            assert untouched.getEffectiveLevel() == logging.ERROR
        assert untouched.level == logging.NOTSET
    finally:
        users.setLevel(logging.NOTSET)


def test_single_console_handler_prints_each_record_once_then_restores(capsys):
    from rich.logging import RichHandler

    logger = logging.getLogger("test_console.cli")
    logger.propagate = False
    plain = logging.StreamHandler(sys.stderr)
    rich = RichHandler()
    logger.addHandler(plain)
    logger.addHandler(rich)
    try:
        with single_console_handler(logger):
            logger.warning("once please")
        assert capsys.readouterr().err.count("once please") == 1
        assert logger.handlers == [plain, rich]
        logger.warning("twice now")  # outside: anomalib's configuration again (rich writes to stdout or stderr)
        out = capsys.readouterr()
        assert (out.out + out.err).count("twice now") == 2
    finally:
        logger.removeHandler(plain)
        logger.removeHandler(rich)
        logger.propagate = True


def test_lightning_advertisement_is_dropped_only_inside_and_other_records_kept():
    """Lightning's "Tip: ... litlogger" line at Trainer creation is gone in our CLI runs; its other lines stay."""
    from lightning.pytorch import Trainer
    from lightning_utilities.core import rank_zero

    logger = rank_zero.log  # where rank_zero_info writes now (set by the Lightning package imported last)

    def trainer_messages() -> list[str]:
        records = _Records()
        logger.addHandler(records)
        level = logger.level
        logger.setLevel(logging.INFO)  # whatever other tests left as the effective level
        try:
            Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
        finally:
            logger.removeHandler(records)
            logger.setLevel(level)
        return [record.getMessage() for record in records.records]

    def has_tip(messages: list[str]) -> bool:
        return any("litlogger" in message for message in messages)

    assert has_tip(trainer_messages())  # Lightning's behaviour this guards against (fails if Lightning drops it)
    with quiet_cli_run():
        inside = trainer_messages()
    assert not has_tip(inside)
    assert any(message.startswith("GPU available") for message in inside)
    assert has_tip(trainer_messages())  # the filter is gone again
    filters = list(logger.filters)
    with dropped_records([(logger.name, "drop me")]):
        assert len(logger.filters) == len(filters) + 1
    assert logger.filters == filters


def test_anomalib_models_import_is_quiet_and_later_warnings_still_show():
    """The start-up hook's loader runs ``anomalib.models`` with anomalib's own deprecation warnings silenced, only then.

    The messages are anomalib 2.7's (its ``cfm`` model imports ``timm.models.layers``; ``dinomaly``
    imports its deprecated ``dinov2`` package); a stand-in loader raises them here, as importing
    anomalib again in a fresh interpreter would take seconds.
    """

    class AnomalibModelsLoader:
        def exec_module(self, module: types.ModuleType) -> None:
            warnings.warn(
                "Importing from timm.models.layers is deprecated, please import via timm.layers",
                FutureWarning,
                stacklevel=1,
            )
            warnings.warn(
                "The anomalib.models.components.dinov2 package is deprecated and will be removed",
                FutureWarning,
                stacklevel=1,
            )
            warnings.warn("a warning of anomalib that is not known to be harmless", FutureWarning, stacklevel=1)

    module = types.ModuleType("anomalib.models")
    module.__spec__ = importlib.machinery.ModuleSpec("anomalib.models", None)
    loader = _ChainedLoader(AnomalibModelsLoader())
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        loader.exec_module(module)
        warnings.warn("Importing from timm.models.layers is deprecated (after the import)", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == [
        "a warning of anomalib that is not known to be harmless",
        "Importing from timm.models.layers is deprecated (after the import)",
    ]
    assert warnings.filters == filters_before


def test_onnx_export_is_quiet_and_restores_logging(tmp_path, info_root, capsys):
    """Our ``to_onnx`` (at opset 18: no failing down-conversion) prints nothing and logs no exporter INFO.

    anomalib's own ``to_onnx`` of this model logged about 480 such lines, among them a traceback.
    """
    import onnx

    model = tiny_model("firm")
    model.eval()
    with torch.no_grad():
        model.fit_scorer(iter([NormalBatch(torch.rand(6, 3, IMAGE_SIZE, IMAGE_SIZE))]))

    path = model.to_onnx(tmp_path)
    opsets = {entry.domain: entry.version for entry in onnx.load(str(path)).opset_import}
    assert opsets[""] == 18
    noisy = [r for r in info_root.records if r.name.startswith(EXPORT_LOGGERS) and r.levelno < logging.ERROR]
    assert noisy == []
    assert all(r.exc_info is None for r in info_root.records)  # no traceback
    assert "[torch.onnx]" not in capsys.readouterr().out
    assert all(logging.getLogger(name).level == logging.NOTSET for name in EXPORT_LOGGERS)


def test_evaluator_has_only_the_image_metrics_a_model_updates():
    """No pixel metrics: nothing would update them (each test warned "compute ... before the update")."""
    names = {metric.name for metric in tiny_model("firm").evaluator.test_metrics}
    assert names == {"image_AUROC", "image_F1Score"}


def test_input_errors_made_inside_are_found_when_another_error_quotes_them():
    outside = InputError("made before")
    with input_errors_made() as made:
        ours = InputError("Folder 'x' does not exist.")
        wrapper = ValueError(f"Does not validate against any of the Union subtypes\n  - {ours}\nGiven value: ...")
        assert quoted_input_error(wrapper, made) is ours
        assert quoted_input_error(ours, made) is ours
        assert quoted_input_error(ValueError("something else"), made) is None
    assert outside not in made
    InputError("made after")
    assert len(made) == 1  # collection stopped on exit


def test_anomalib_data_folder_errors_become_one_line_with_advice(tmp_path):
    from anomalib.data import Folder

    from anomalib_firm.console import data_error_message

    for name in ("train/good", "test/bad"):
        (tmp_path / name).mkdir(parents=True)
    with pytest.raises(RuntimeError) as empty:  # anomalib's error for a folder without images
        Folder(name="x", root=tmp_path, normal_dir="train/good", abnormal_dir="test/bad", num_workers=0).setup()
    message = data_error_message(empty.value)
    assert message.startswith(f"Found 0 DirType.NORMAL images in {tmp_path / 'train' / 'good'} with extensions")
    assert "Put the images there, or check --data.root" in message
    assert "\n" not in message
    assert data_error_message(RuntimeError("CUDA out of memory")) is None  # other errors keep their traceback
    assert data_error_message(FileNotFoundError("model.ckpt")) is None


def test_an_unknown_backbone_is_an_input_error():
    from anomalib_firm.console import InputError
    from anomalib_firm.models import Firm

    with pytest.raises(InputError, match="Unknown backbone 'resnet999': use 'resnet18_cifar'"):
        Firm(backbone="resnet999")
