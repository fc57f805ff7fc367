"""A layer applied at every step, its weight gradient computed once: the same values and gradients as the layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from show_attend_tell import model as model_module
from show_attend_tell import objectives
from show_attend_tell.model import Captioner, ModelConfig
from show_attend_tell.step_linear import StepLinear


def recurrence(step: nn.Module | StepLinear, x0: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """A toy recurrence that uses ``step`` at every step, on its own output and a new input."""
    h, outputs = x0, []
    for x in inputs.unbind(1):
        h = torch.tanh(step(h) + x)
        outputs.append(h)
    return torch.stack(outputs, 1)


def gradients(make_step, bias: bool, autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    layer = nn.Linear(6, 6, bias=bias)
    x0 = torch.randn(4, 6, requires_grad=True)
    inputs = torch.randn(4, 5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = recurrence(make_step(layer), x0, inputs)
        loss = (out.float() * torch.linspace(-1, 1, 6)).sum()
    params = [x0, *layer.parameters()]
    return out, list(torch.autograd.grad(loss, params))


@pytest.mark.parametrize("bias", [True, False])
def test_float32_values_equal_the_layers_and_gradients_equal_to_rounding(bias):
    ours, our_grads = gradients(StepLinear, bias, autocast=False)
    theirs, their_grads = gradients(lambda layer: layer, bias, autocast=False)
    assert torch.equal(ours, theirs)
    assert [g.dtype for g in our_grads] == [torch.float32] * len(their_grads)
    for mine, other in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(mine, other, rtol=1e-5, atol=1e-6)


def test_under_bfloat16_autocast_the_steps_compute_in_bfloat16_and_the_gradients_arrive_in_float32():
    layer, x = nn.Linear(6, 6), torch.randn(4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert StepLinear(layer)(x).dtype == torch.bfloat16
        assert torch.equal(StepLinear(layer)(x), layer(x))
    ours, our_grads = gradients(StepLinear, True, autocast=True)
    theirs, their_grads = gradients(lambda layer: layer, True, autocast=True)
    assert torch.equal(ours, theirs)
    assert [g.dtype for g in our_grads] == [torch.float32] * 3
    for mine, other in zip(our_grads, their_grads, strict=True):  # autocast sums its per-step gradients in bfloat16
        torch.testing.assert_close(mine, other, rtol=0.03, atol=0.03)


def test_weights_also_used_outside_the_steps_get_both_gradients():
    torch.manual_seed(0)
    layer = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    step = StepLinear(layer)
    loss = step(step(x)).sum() + layer(x).pow(2).sum()
    ours = torch.autograd.grad(loss, list(layer.parameters()))
    theirs = torch.autograd.grad(layer(layer(x)).sum() + layer(x).pow(2).sum(), list(layer.parameters()))
    for mine, other in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, other)


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_the_captioners_training_gradients_are_those_of_its_layers_called_at_each_step(attention, monkeypatch):
    config = ModelConfig(13, 6, 5, attention=attention, embed_dim=7, hidden_dim=9, attention_dim=8, dropout=0.0)
    torch.manual_seed(0)
    model = Captioner(config)
    features, inputs = torch.randn(3, 6, 5), torch.randint(0, 13, (3, 4))
    locations = torch.tensor([[0, -1, 2, 5], [-1, -1, -1, -1], [1, 1, 3, 4]])  # hard: some sampled, some expected

    def grads() -> list[torch.Tensor]:
        out = model(features, inputs, locations=locations)
        mask = torch.ones(inputs.shape, dtype=torch.bool)
        loss = objectives.word_log_likelihood(out.logits, inputs, mask).sum() + out.alphas.pow(2).sum()
        return list(torch.autograd.grad(loss, list(model.parameters())))

    ours = grads()
    monkeypatch.setattr(model_module, "StepLinear", lambda layer: layer)
    theirs = grads()
    for mine, other in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, other, rtol=1e-5, atol=1e-6)


def test_decoding_without_gradients_calls_the_layers_themselves():
    model = Captioner(ModelConfig(13, 6, 5, embed_dim=7, hidden_dim=9, attention_dim=8))
    with torch.no_grad():
        ctx = model.context(torch.randn(2, 6, 5))
    assert ctx.from_h is model.from_h and ctx.gates_z is model.gates_z
