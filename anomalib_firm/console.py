"""Quiet console output: third-party noise silenced where it arises, only while our code runs.

Every context manager here restores what it changed on exit (also after an exception), and
changes nothing a user configured: a logger with its own level keeps it, and only the warning
filters added here are removed again (filters that other code adds meanwhile stay). Nothing is
set at import time.

- :func:`quiet_export`: the ONNX exporter's INFO logs (about 480 lines for one model: graph
  passes, deduplicated initialisers) and its harmless warnings about ``None`` outputs.
- :func:`quiet_cli_run`: one ``anomalib`` command run with one of our models: each log record
  once (anomalib's CLI logs every record twice, plain and through rich), no known-harmless
  deprecation warnings of the libraries underneath and no advertisement lines from Lightning.
- :func:`quiet_anomalib_import`: the deprecation warnings that anomalib's own modules raise when
  ``anomalib.models`` is imported (nothing a user can act on).
- :class:`InputError` (and :class:`MissingInputError`, :class:`UnavailableInputError`): our errors about
  the user's input, shown by the CLI as their message alone;
- :class:`TrainingDivergedError`: a NaN/inf training loss, shown the same way;
- :func:`data_error_message`: anomalib's own errors about the data folders (a missing folder, a
  folder without images), as one line that says what to do;
- :func:`stopped_by_another_process`: under DDP, the error a process gets when another one failed
  (that one prints its own error; this one says so in one line).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping

#: Loggers of the ONNX export and the least level they print at during :func:`quiet_export`.
EXPORT_LOG_LEVELS: dict[str, int] = {
    "onnxscript": logging.WARNING,
    "onnx_ir": logging.WARNING,
    # torch's exporter warns that the ``None`` outputs of an image-level model (no anomaly map) are dropped.
    "torch.onnx": logging.ERROR,
}

#: Log levels while NNCF compresses an export: NNCF lists every node it leaves in floating point at INFO
#: (about 30 lines; our scorer's on purpose), and importing it makes torch warn that no CUDA runtime exists.
COMPRESSION_LOG_LEVELS: dict[str, int] = {"nncf": logging.WARNING, "torch.utils.cpp_extension": logging.ERROR}

#: ``(category, message regex)`` of warnings known to be harmless during our training, test and export.
RUN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # lightning 2.6's CombinedLoader with torch >= 2.10 (internal to lightning, nothing to change on our side).
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # predict/test from a checkpoint in another results folder: Lightning notes that the checkpoint callback's
    # folder moved; those commands save no checkpoint.
    (UserWarning, r"The dirpath has changed from"),
    # anomalib's loaders for ``--data <path>`` ask for pinned memory, which only matters with a GPU.
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),
)

#: Loggers that Lightning's ``rank_zero_info`` may write through: the last-imported of Lightning's packages
#: sets it (``lightning_utilities.core.rank_zero.log``), so the record's logger depends on import order.
_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
)
#: ``(logger, message prefix)`` of harmless log records: Lightning 2.6 suggests a cloud logger package at
#: every ``Trainer`` creation; and when ``anomalib train`` tests after fitting, it says that the callbacks our
#: models configure (pre/post-processor, evaluator, prediction report) "override" those of the fit, which are
#: the same ones (``rank_zero_info`` in its logger and callback connectors).
HARMLESS_RECORDS: tuple[tuple[str, str], ...] = tuple(
    (name, prefix)
    for name in _RANK_ZERO_LOGGERS
    for prefix in (
        "\N{ELECTRIC LIGHT BULB} Tip: For seamless cloud logging",
        "The following callbacks returned in `LightningModule.configure_callbacks` will override",
    )
)

#: ``(category, message regex)`` of the warnings anomalib 2.7's own modules raise while ``anomalib.models`` loads.
ANOMALIB_IMPORT_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"Importing from timm\.models\.layers is deprecated"),
    (FutureWarning, r"The anomalib\.models\.components\.dinov2 package is deprecated"),
)


class InputError(ValueError):
    """A problem with what the user gave (image files, settings, a checkpoint) whose message says what to do.

    Under the ``anomalib`` command with one of our models it is printed as that one message, without a
    traceback (:func:`anomalib_firm._register.patch_cli`); in Python it is an ordinary ``ValueError``.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        if _RAISED_INPUT_ERRORS is not None:
            _RAISED_INPUT_ERRORS.append(self)


#: The input errors made while :func:`input_errors_made` is active (``None`` outside).
_RAISED_INPUT_ERRORS: list[InputError] | None = None


@contextlib.contextmanager
def input_errors_made() -> Iterator[list[InputError]]:
    """Collect every :class:`InputError` made inside, also those a library re-raises as its own error.

    jsonargparse reports an error raised while it builds a model or data module as a ``ValueError``
    of its own whose text quotes ours (its ``Union`` message), so the CLI finds ours here.
    """
    global _RAISED_INPUT_ERRORS  # one command at a time, in the CLI's main thread
    outer, _RAISED_INPUT_ERRORS = _RAISED_INPUT_ERRORS, []
    try:
        yield _RAISED_INPUT_ERRORS
    finally:
        _RAISED_INPUT_ERRORS = outer


def quoted_input_error(error: BaseException, made: list[InputError]) -> InputError | None:
    """The input error among ``made`` that ``error`` is or quotes (the last one), if any."""
    if isinstance(error, InputError):
        return error
    text = str(error)
    return next((candidate for candidate in reversed(made) if str(candidate) and str(candidate) in text), None)


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder that the settings name (data, weights) does not exist; also a ``FileNotFoundError``."""


class UnavailableInputError(InputError, RuntimeError):
    """Something the run needs (a data set, pretrained weights) could not be fetched; the message says how to get it."""


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and what to change.

    Shown by the ``anomalib`` command like :class:`InputError` (message alone, exit status 1); in Python
    it is an ordinary ``FloatingPointError``. Checkpoints written before it are kept.
    """


#: What to check when anomalib's data module finds a folder missing or empty.
DATA_FOLDER_ADVICE = (
    "check --data.root and the folder options (normal_dir, abnormal_dir, normal_test_dir, mask_dir): "
    "each names a folder under the root that holds the images"
)


def data_error_message(error: BaseException) -> str | None:
    """One line for anomalib's errors about the data folders, or ``None`` for any other error.

    anomalib's ``Folder`` raises ``FileNotFoundError("Path does not exist: ...")`` for a folder that
    is not there and ``RuntimeError("Found 0 ... images in ...")`` for one without images.
    """
    text = " ".join(str(error).split())
    if isinstance(error, FileNotFoundError) and text.startswith("Path does not exist"):
        return f"{text}: {DATA_FOLDER_ADVICE}."
    if isinstance(error, RuntimeError) and text.startswith("Found 0 "):
        return f"{text}. Put the images there, or {DATA_FOLDER_ADVICE}."
    return None


#: Parts of the messages of gloo / NCCL collectives whose peer process has exited.
PEER_GONE_MESSAGES = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
)


def stopped_by_another_process(error: BaseException) -> bool:
    """Whether ``error`` is a collective operation failing because another process of a DDP run exited.

    The process that failed first prints its own error; this one then only needs to say why it stopped.
    """
    from torch.distributed import DistBackendError

    if isinstance(error, DistBackendError):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in PEER_GONE_MESSAGES)


def _ignore_filter_index(category: type[Warning], message: str) -> int | None:
    """Index in :data:`warnings.filters` of the filter ignoring exactly ``(category, message)``, if any."""
    for index, (action, pattern, filter_category, _, _) in enumerate(warnings.filters):
        if action == "ignore" and filter_category is category and getattr(pattern, "pattern", None) == message:
            return index
    return None


@contextlib.contextmanager
def ignored_warnings(rules: Iterable[tuple[type[Warning], str]]) -> Iterator[None]:
    """Ignore warnings matching ``(category, message regex)`` while inside; then remove exactly these filters.

    Unlike :class:`warnings.catch_warnings`, filters that other code adds meanwhile (a library
    imported inside, say) are kept on exit; a filter that was already there stays too.
    """
    added = []
    for category, message in rules:
        if _ignore_filter_index(category, message) is None:
            warnings.filterwarnings("ignore", message=message, category=category)
            added.append((category, message))
    try:
        yield
    finally:
        for category, message in added:
            index = _ignore_filter_index(category, message)
            if index is not None:
                del warnings.filters[index]  # type: ignore[attr-defined]  # typeshed: a Sequence; really a list


@contextlib.contextmanager
def logger_levels(levels: Mapping[str, int]) -> Iterator[None]:
    """Raise each named logger to at least its level while inside (a logger given a level by the user keeps it)."""
    changed = []
    for name, level in levels.items():
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET and logger.getEffectiveLevel() < level:
            logger.setLevel(level)
            changed.append(logger)
    try:
        yield
    finally:
        for logger in changed:
            logger.setLevel(logging.NOTSET)


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """The ONNX exporter's INFO logs and known-harmless warnings silenced; its errors still show."""
    with logger_levels(EXPORT_LOG_LEVELS), ignored_warnings(RUN_WARNINGS):
        yield


def _is_console_handler(handler: logging.Handler) -> bool:
    """A plain handler writing to the console (``logging.basicConfig``'s)."""
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (sys.stderr, sys.stdout)


@contextlib.contextmanager
def single_console_handler(logger: logging.Logger | None = None) -> Iterator[None]:
    """Each record once: drop the rich console handler while a plain console handler also prints (restored on exit).

    anomalib's CLI (``anomalib.loggers.configure_logger``) gives the root logger both
    ``logging.basicConfig``'s handler and a ``RichHandler``, so every record is printed twice;
    the plain one is kept (one line per record, readable in a log file or a narrow terminal).
    """
    logger = logger or logging.getLogger()
    removed = []
    if any(_is_console_handler(handler) for handler in logger.handlers):
        removed = [handler for handler in logger.handlers if type(handler).__name__ == "RichHandler"]
        for handler in removed:
            logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in removed:
            logger.addHandler(handler)


class _DropPrefixes(logging.Filter):
    """Drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


@contextlib.contextmanager
def dropped_records(rules: Iterable[tuple[str, str]]) -> Iterator[None]:
    """Drop the log records of logger ``name`` starting with ``prefix`` while inside; the filters go on exit."""
    prefixes: dict[str, tuple[str, ...]] = {}
    for name, prefix in rules:
        prefixes[name] = (*prefixes.get(name, ()), prefix)
    installed = [(logging.getLogger(name), _DropPrefixes(names_prefixes)) for name, names_prefixes in prefixes.items()]
    for logger, record_filter in installed:
        logger.addFilter(record_filter)
    try:
        yield
    finally:
        for logger, record_filter in installed:
            logger.removeFilter(record_filter)


@contextlib.contextmanager
def quiet_cli_run() -> Iterator[None]:
    """One ``anomalib`` command with one of our models: records printed once, harmless noise silenced."""
    with single_console_handler(), ignored_warnings(RUN_WARNINGS), dropped_records(HARMLESS_RECORDS):
        yield


@contextlib.contextmanager
def quiet_anomalib_import() -> Iterator[None]:
    """The deprecation warnings of anomalib's own modules silenced while ``anomalib.models`` is imported."""
    with ignored_warnings(ANOMALIB_IMPORT_WARNINGS):
        yield
