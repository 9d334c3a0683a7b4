"""The opt-in compiled training step: one graph per model (no graph breaks) and the same loss as eager.

Compiling with inductor takes minutes on a small CPU, so the equality test compiles with the
``aot_eager`` backend: the same Dynamo capture and AOT autograd graphs, executed eagerly.
"""

from __future__ import annotations

import functools

import pytest
import torch
from model_utils import MODEL_NAMES, random_training_batch, tiny_model

from anomalib_firm.data.batch import OneVsRestImageBatch
from anomalib_firm.models import Firm, Mcl, Msc


def _batch() -> OneVsRestImageBatch:
    return random_training_batch(4, seed=5)


def _build(name: str, **kwargs) -> Firm | Mcl | Msc:
    torch.manual_seed(0)
    return tiny_model(name, with_center=True, **kwargs)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_loss_is_one_graph(name):
    model = _build(name).train()
    model.prepare_training()
    batch = _batch()
    images = torch.Tensor.as_subclass(batch.image, torch.Tensor)  # as compute_loss passes them
    explanation = torch._dynamo.explain(model.training_loss)(images, model.training_class_labels(batch))
    assert explanation.graph_break_count == 0, [reason.reason for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_compiled_step_gives_the_eager_loss_and_gradients(monkeypatch, name):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    eager = _build(name, mixed_precision=False).train()
    compiled = _build(name, mixed_precision=False, compile_step=True).train()
    compiled.load_state_dict(eager.state_dict())
    eager.prepare_training()
    compiled.prepare_training()
    assert compiled._compiled_training_loss is not None
    assert eager._compiled_training_loss is None
    losses = []
    for model in (eager, compiled):
        torch.manual_seed(1)
        loss = model.compute_loss(_batch())
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    for (name_e, p_e), (_, p_c) in zip(eager.named_parameters(), compiled.named_parameters(), strict=True):
        if p_e.grad is not None:
            torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-3, atol=1e-5, msg=name_e)
