"""Each model's part of the training-speed benchmark: how it is built and stepped, and how the authors' code fed it.

One recipe per registered model (:data:`RECIPES`, checked against the registry): the generic
measuring in ``benchmark_training_speed.py`` has no branch on the model. A recipe says how many
items a source image makes, the learning rate and momentum kind of the model's SGD, what must
happen before the first step (MSC's centre), the cases of the command line, and the paper-style
pipeline: the per-image torchvision transform of one view, the PIL data set and the loss as the
authors' code computes it.
"""

from __future__ import annotations

import argparse
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from anomalib_firm.models.components.backbones.networks import IMAGENET_MEAN, IMAGENET_STD
from anomalib_firm.models.image.firm.torch_model import CIFAR_MEAN, CIFAR_STD
from anomalib_firm.registry import model_names

#: Backbone names of ``--msc-backbones`` and the weights each is built with.
MSC_WEIGHTS = {"efficientnet_lite0": "efficientnet-lite0-package", "resnet152": "random", "resnet18": "random"}


class Recipe(ABC):
    """What the speed benchmark needs to know of one model."""

    #: Training items a source image makes (4 rotations for FIRM and MCL).
    items_per_image = 1
    #: Whether the model's SGD uses Nesterov momentum.
    nesterov = False

    @abstractmethod
    def build(self, backbone: str, image_size: int, options: dict[str, Any]) -> nn.Module:
        """The package's Lightning model with ``options`` (no post-processing or evaluation parts)."""

    def learning_rate(self, module: Any, batch_items: int) -> float:
        """The learning rate the model trains a batch of ``batch_items`` items with."""
        return float(module.learning_rate(batch_items))

    def prepare(self, module: Any, images: torch.Tensor, device: torch.device) -> None:
        """What must happen before the first step (nothing by default)."""
        del module, images, device

    @abstractmethod
    def cases(self, args: argparse.Namespace) -> list[tuple[str, int, int]]:
        """``(backbone, image_size, batch_items)`` of every case the command line asks for."""

    @abstractmethod
    def paper_transform(self, size: int) -> Callable[[Any], torch.Tensor]:
        """Per-image torchvision transform of one view, as the paper lists it."""

    @abstractmethod
    def paper_dataset(
        self, images: list[Any], transform: Callable[[Any], torch.Tensor], batch_items: int
    ) -> tuple[Dataset, int]:
        """The authors' data set of PIL ``images`` and the loader's batch size for ``batch_items`` items."""

    @abstractmethod
    def paper_loss(self, module: Any, batch: Any, device: torch.device) -> torch.Tensor:
        """The loss of one loader batch, computed as the authors' code does."""


class FirmRecipe(Recipe):
    """FIRM: 4n items (every image and its rotations, shuffled together), CIFAR normalisation."""

    items_per_image = 4

    def build(self, backbone: str, image_size: int, options: dict[str, Any]) -> nn.Module:
        from anomalib_firm.models import Firm

        return Firm(backbone=backbone, image_size=image_size, **options)

    def cases(self, args: argparse.Namespace) -> list[tuple[str, int, int]]:
        return [(args.firm_backbone, args.firm_image_size, batch) for batch in args.firm_batch]

    def paper_transform(self, size: int) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms as T

        return T.Compose(
            [
                T.RandomResizedCrop(size, scale=(0.25, 1.0), ratio=(1.0, 1.0)),
                T.ColorJitter(0.4, 0.4, 0.4, 0.4),
                T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 2.0))], p=0.75),
                T.ToTensor(),
                T.Normalize(CIFAR_MEAN, CIFAR_STD),
            ]
        )

    def paper_dataset(
        self, images: list[Any], transform: Callable[[Any], torch.Tensor], batch_items: int
    ) -> tuple[Dataset, int]:
        return FirmRotationDataset(images, transform), batch_items

    def paper_loss(self, module: Any, batch: Any, device: torch.device) -> torch.Tensor:
        view1, view2, rotations = batch
        views = torch.cat([view1.to(device, non_blocking=True), view2.to(device, non_blocking=True)])
        network = module.model
        z1, z2 = network.head(network.encoder(views)).chunk(2)  # normalised in the transforms
        return module.loss(z1, z2, rotations.to(device, non_blocking=True) == 0)


class MclRecipe(Recipe):
    """MCL: every item returns its 4 rotations; the loss is the authors' per-row loop."""

    items_per_image = 4
    nesterov = True

    def build(self, backbone: str, image_size: int, options: dict[str, Any]) -> nn.Module:
        from anomalib_firm.models import Mcl

        return Mcl(backbone=backbone, image_size=image_size, **options)

    def cases(self, args: argparse.Namespace) -> list[tuple[str, int, int]]:
        return [(args.mcl_backbone, args.mcl_image_size, batch) for batch in args.mcl_batch]

    def paper_transform(self, size: int) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms as T

        return T.Compose(
            [
                T.RandomResizedCrop(size, scale=(0.08, 1.0)),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.ToTensor(),
            ]
        )

    def paper_dataset(
        self, images: list[Any], transform: Callable[[Any], torch.Tensor], batch_items: int
    ) -> tuple[Dataset, int]:
        return MclRotationDataset(images, transform), batch_items // self.items_per_image

    def paper_loss(self, module: Any, batch: Any, device: torch.device) -> torch.Tensor:
        from _mcl_per_row_loss import naive_mcl_loss

        from anomalib_firm.models.image.mcl.loss import sample_partners

        view1, view2 = batch  # (B, 4, 3, S, S) each -> rotation-major (4B, 3, S, S)
        views = torch.cat([view.to(device, non_blocking=True).transpose(0, 1).flatten(0, 1) for view in (view1, view2)])
        z1, z2 = module.model.embed(views).chunk(2)
        labels = torch.arange(4, device=device).repeat_interleave(view1.shape[0])
        loss_fn = module.loss
        return naive_mcl_loss(
            z1,
            z2,
            labels,
            sample_partners(labels),
            num_classes=1,
            temperature=loss_fn.temperature,
            alpha=loss_fn.alpha,
            beta=loss_fn.beta,
            spa_weight=loss_fn.spa_weight,
            missing_partner="exclude",
        )[0]


class MscRecipe(Recipe):
    """MSC: MoCo-v2 views of each image, ImageNet normalisation; the fixed centre before the first step."""

    def build(self, backbone: str, image_size: int, options: dict[str, Any]) -> nn.Module:
        from anomalib_firm.models import Msc

        weights = MSC_WEIGHTS.get(backbone, "random")
        return Msc(backbone=backbone, weights=weights, image_size=image_size, **options)

    def learning_rate(self, module: Any, batch_items: int) -> float:
        return float(module.lr)  # MSC's rate does not scale with the batch

    def prepare(self, module: Any, images: torch.Tensor, device: torch.device, count: int = 256) -> None:
        batches = (
            images[start : start + 64].to(device).float().div(255) for start in range(0, min(count, len(images)), 64)
        )
        module.compute_center(batches)

    def cases(self, args: argparse.Namespace) -> list[tuple[str, int, int]]:
        return [(backbone, args.msc_image_size, batch) for backbone in args.msc_backbones for batch in args.msc_batch]

    def paper_transform(self, size: int) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms as T

        return T.Compose(
            [
                T.RandomResizedCrop(size, scale=(0.2, 1.0)),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.RandomApply([PilGaussianBlur((0.1, 2.0))], p=0.5),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def paper_dataset(
        self, images: list[Any], transform: Callable[[Any], torch.Tensor], batch_items: int
    ) -> tuple[Dataset, int]:
        return TwoViewDataset(images, transform), batch_items

    def paper_loss(self, module: Any, batch: Any, device: torch.device) -> torch.Tensor:
        view1, view2 = batch
        views = torch.cat([view1.to(device, non_blocking=True), view2.to(device, non_blocking=True)])
        network = module.model
        z1, z2 = F.normalize(network.backbone(views), dim=-1).chunk(2)  # ImageNet-normalised in the transforms
        return module.loss(z1, z2, network.center)


#: The recipe of every registered model (the registry's lower-case names).
RECIPES: dict[str, Recipe] = {"firm": FirmRecipe(), "mcl": MclRecipe(), "msc": MscRecipe()}
if set(RECIPES) != set(model_names()):
    msg = f"benchmark_training_speed has recipes for {sorted(RECIPES)}, the registry lists {sorted(model_names())}."
    raise RuntimeError(msg)


# --------------------------------------------------------------------------- the authors' PIL pipelines
class PilGaussianBlur:
    """MoCo-v2's blur: PIL ``ImageFilter.GaussianBlur`` with a radius drawn from ``sigma`` (MSC's code)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, image: Any) -> Any:
        """Blur one PIL image."""
        from PIL import ImageFilter

        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def to_pil(images: torch.Tensor) -> list[Any]:
    """uint8 ``(N, 3, H, W)`` -> list of RGB PIL images."""
    from PIL import Image

    return [Image.fromarray(image.permute(1, 2, 0).numpy(), mode="RGB") for image in images.cpu()]


def rotate_pil(image: Any, rotation: int) -> Any:
    """Rotate a PIL image by ``rotation`` quarter turns counter-clockwise (as ``torch.rot90``)."""
    from PIL import Image

    turns = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
    return image if rotation == 0 else image.transpose(turns[rotation])


class FirmRotationDataset(Dataset):
    """FIRM authors' layout: 4n items, every image and its 3 rotations as separate PIL images."""

    def __init__(self, images: list[Any], transform: Callable[[Any], torch.Tensor]) -> None:
        self.items = [(rotate_pil(image, rotation), rotation) for rotation in range(4) for image in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, rotation = self.items[index]
        return self.transform(image), self.transform(image), rotation


class MclRotationDataset(Dataset):
    """MCL layout: every item returns its 4 rotations, two views each (base flip p 0.5 per view)."""

    def __init__(self, images: list[Any], transform: Callable[[Any], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def _view(self, rotation: int, base: Any) -> torch.Tensor:
        from PIL import Image

        flipped = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < 0.5 else base
        return self.transform(rotate_pil(flipped, rotation))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.images[index]
        view1 = torch.stack([self._view(rotation, base) for rotation in range(4)])
        view2 = torch.stack([self._view(rotation, base) for rotation in range(4)])
        return view1, view2


class TwoViewDataset(Dataset):
    """MSC layout: every item returns two views of its image."""

    def __init__(self, images: list[Any], transform: Callable[[Any], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.transform(image), self.transform(image)
