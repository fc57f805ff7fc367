"""An exponential moving average of a model's weights, validated and saved in place of the last step's.

On small data sets the average is smoother than the last step's weights and usually better
(``ema_decay``; 0 turns it off). It lives in the training state, so a checkpoint carries it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .checkpoint import Progress
from .model import Captioner


def update(state: Progress, model: Captioner, decay: float) -> None:
    """Fold the model's current weights into ``state.average``, with a warm-up so early steps are not overweighted."""
    params = dict(model.named_parameters())
    if state.average is None:
        state.average = {k: p.detach().clone() for k, p in params.items()}
    state.average_steps += 1
    d = min(decay, (1 + state.average_steps) / (10 + state.average_steps))
    torch._foreach_lerp_(list(state.average.values()), [params[k].detach() for k in state.average], 1 - d)


@contextlib.contextmanager
def averaged(model: Captioner, average: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """``model`` holds the averaged weights meanwhile (its own when there is no average), then its own again."""
    if average is None:
        yield
        return
    params = dict(model.named_parameters())
    own = {k: p.detach().clone() for k, p in params.items()}
    with torch.no_grad():
        for k, v in average.items():
            params[k].copy_(v)
        try:
            yield
        finally:
            for k, v in own.items():
                params[k].copy_(v)
