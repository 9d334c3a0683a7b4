"""The start-up hook: nothing heavy at start-up, classes registered whatever the import order."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from anomalib_firm import models
from anomalib_firm.registry import MODELS, alias_name, model_packages

CHECK = """
import anomalib.models as models, anomalib.data as data
from anomalib.models import get_model
assert all(hasattr(models, name) for name in ("Firm", "FIRM", "Msc", "MSC", "Mcl", "MCL"))
assert "anomalib_firm.models" in models.ALLOWED_MODULES
assert all(hasattr(data, name) for name in ("CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "Digits", "ClassFolder"))
assert type(get_model("firm", image_size=16)).__name__ == "Firm"
assert type(get_model({"class_path": "anomalib_firm.models.Mcl"})).__name__ == "Mcl"
msc = get_model({"class_path": "MSC", "init_args": {"backbone": "resnet18", "weights": "random"}})
assert type(msc).__name__ == "MSC"
from anomalib.data import get_datamodule
assert type(get_datamodule({"class_path": "Digits", "init_args": {"category": 3}})).__name__ == "Digits"
print("ok")
"""


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_startup_imports_nothing_heavy():
    heavy = "('torch', 'anomalib', 'anomalib_firm.models')"
    out = _python(f"import sys; print(sorted(m for m in {heavy} if m in sys.modules))")
    assert out.strip() == "[]"
    assert "anomalib_firm._hook" in _python("import sys; print(list(sys.modules))")


@pytest.mark.parametrize(
    "first_import",
    [
        "import anomalib",
        "from anomalib_firm.models import Firm",
        "from anomalib_firm.data import Digits",
        "import anomalib_firm.models.components.scoring.feature_bank",  # a shared part that imports anomalib
    ],
)
@pytest.mark.slow
def test_registered_whatever_the_import_order(first_import):
    assert _python(first_import + "\n" + CHECK).strip().endswith("ok")


def test_startup_line_is_silent_without_the_package(tmp_path):
    """A stale .pth (package removed, editable checkout moved) must not print errors at every start-up."""
    line = (Path(__file__).parent.parent / "anomalib_firm.pth").read_text().strip()
    assert line.startswith("import ")  # site.py executes only lines starting with "import"
    # -S: no site-packages, and tmp_path as the working directory: anomalib_firm cannot be found.
    hidden = subprocess.run(
        [sys.executable, "-S", "-c", line], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stderr == ""
    found = subprocess.run(
        [sys.executable, "-c", line + "\nimport sys; print('anomalib_firm._hook' in sys.modules)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.stdout.strip() == "True", found.stderr


@pytest.mark.parametrize(("name", "package"), MODELS.items())
def test_each_registry_entry_is_a_model_folder_with_its_alias(name, package):
    """The registry is the one list: each entry's folder exports the class and its alias, nothing else."""
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted([name, alias_name(name)])
    model, alias = getattr(module, name), getattr(module, alias_name(name))
    assert alias.__name__ == alias_name(name)
    assert alias.__bases__ == (model,)
    assert vars(alias)["name"].fget(None) == name  # results and checkpoints under the model's own name
    assert pickle.loads(pickle.dumps(alias)) is alias  # importable where it says it lives
    assert getattr(models, alias_name(name)) is alias
    assert models.__all__ == sorted(model_packages())


@pytest.mark.parametrize(
    ("class_path", "seeded"), [("anomalib_firm.models.Firm", True), ("anomalib.models.Padim", False)]
)
def test_cli_seed_is_applied_for_our_models_only(monkeypatch, class_path, seeded):
    import contextlib
    from types import SimpleNamespace

    import lightning.pytorch
    from anomalib.cli.cli import AnomalibCLI
    from jsonargparse import Namespace

    import anomalib_firm._register  # noqa: F401  (the start-up hook patched the CLI class already)

    calls: list[int] = []
    monkeypatch.setattr(lightning.pytorch, "seed_everything", lambda seed, workers: calls.append(seed))
    config = Namespace(subcommand="train", train=Namespace(seed_everything=7, model=Namespace(class_path=class_path)))
    with contextlib.suppress(Exception):  # anomalib's own step after ours needs a real CLI
        AnomalibCLI.before_instantiate_classes(SimpleNamespace(config=config))
    assert calls == ([7] if seeded else [])
