"""FIRM's three scores against a naive per-image reference (loops, explicit rotations, plain cosine)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from anomalib_firm.models.components.views.augmentations import crop_and_resize
from anomalib_firm.models.image.firm.torch_model import FirmModel, centre_box

SIZE, K = 16, 3


def _encoder_features(model: FirmModel, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (D,): one image through the normalisation and the encoder, nothing else."""
    return model.encoder(model.normalize(image[None]))[0]


def _evaluation_view(image: torch.Tensor, zoom: float) -> torch.Tensor:
    return crop_and_resize(image[None], centre_box(zoom), SIZE)[0]


def _top_k_cosine(query: torch.Tensor, bank: list[torch.Tensor]) -> float:
    similarities = sorted((float(F.cosine_similarity(query, other, dim=0)) for other in bank), reverse=True)
    return sum(similarities[:K]) / K


def _reference(model: FirmModel, train: torch.Tensor, image: torch.Tensor, score: str) -> float:
    """Similarity of one image: per rotation a, its view rotated by a against the bank of rotated training views."""
    zoom = model.eval_zoom
    banks = [
        [_encoder_features(model, torch.rot90(_evaluation_view(x, zoom), a, dims=(-2, -1))) for x in train]
        for a in range(4)
    ]
    if score == "cos_k":
        return _top_k_cosine(_encoder_features(model, _evaluation_view(image, zoom)), banks[0])

    def angled(view: torch.Tensor) -> float:
        return (
            sum(
                _top_k_cosine(_encoder_features(model, torch.rot90(view, a, dims=(-2, -1))), banks[a]) for a in range(4)
            )
            / 4
        )

    if score == "angled":
        return angled(_evaluation_view(image, zoom))
    # ensemble: square crops of the evaluation view (their boxes, composed with the view's, are checked
    # below), each scored like "angled" without a second zoom, averaged.
    values = [angled(crop_and_resize(image[None], box[None], SIZE)[0]) for box in model.ensemble_boxes]
    return sum(values) / len(values)


@pytest.mark.parametrize("score", ["cos_k", "angled", "ensemble"])
def test_scores_match_the_naive_reference(score: str) -> None:
    torch.manual_seed(0)
    model = FirmModel(head_hidden_dim=32, head_layers=2, score=score, num_neighbors=K, num_crops=2).eval()
    generator = torch.Generator().manual_seed(1)
    train = torch.rand(4, 3, SIZE, SIZE, generator=generator)
    test = torch.rand(2, 3, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        model.bank.update(F.normalize(model.rotation_features(train), dim=-1))
        scores = model(test).pred_score
        expected = torch.tensor([-_reference(model, train, image, score) for image in test])
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)


def test_ensemble_crops_are_square_and_inside_the_evaluation_view() -> None:
    model = FirmModel(head_hidden_dim=32, head_layers=2, score="ensemble", num_crops=10)
    x0, y0, width, height = model.ensemble_boxes.unbind(dim=1)
    torch.testing.assert_close(width, height)  # square (the image is square)
    view_x0, view_y0, view_side, _ = centre_box(model.eval_zoom)[0]
    assert bool((x0 >= view_x0 - 1e-6).all() and (y0 >= view_y0 - 1e-6).all())
    assert bool((x0 + width <= view_x0 + view_side + 1e-6).all() and (y0 + height <= view_y0 + view_side + 1e-6).all())
    areas = (width * height) / view_side**2  # area fraction of the evaluation view, scale 0.55-1
    assert bool((areas >= 0.55 - 1e-6).all() and (areas <= 1 + 1e-6).all())
