"""Model and checkpoint files are data: one carrying a pickled object is refused, and its code never runs."""

from __future__ import annotations

import os

import pytest
import torch
from test_train import run

from show_attend_tell.errors import SatError
from show_attend_tell.model import MODEL_FORMAT, Captioner, ModelConfig, load_model, save_model
from show_attend_tell.text import SPECIALS


class RunsCode:
    """Unpickling this runs a shell command: what a booby-trapped file would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


FEATURES = {"encoder": "efficientnet_lite0", "layer": "blocks.6", "weights": "imagenet", "image_size": 64, "dim": 6,
            "grid": [2, 2], "images_sha256": "0" * 64}  # fmt: skip
VOCAB = [*SPECIALS, "a", "dog", "runs", "on", "the", "grass"]


def small_model() -> Captioner:
    return Captioner(ModelConfig(10, 4, 6, embed_dim=4, hidden_dim=5, attention_dim=3, dropout=0.0))


def test_a_model_file_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    model = small_model()
    torch.save(
        {
            "format": MODEL_FORMAT,
            "config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "vocab": VOCAB,
            "features": {},
            "payload": RunsCode(marker),
        },
        tmp_path / "model.pt",
    )
    with pytest.raises(SatError, match="refusing the model file .*model.pt: it holds Python objects .* could run code"):
        load_model(tmp_path / "model.pt")
    assert not marker.exists()


def test_a_model_file_as_training_writes_it_loads(tmp_path):
    model = small_model()
    save_model(tmp_path / "model.pt", model, model.state_dict(), vocab=VOCAB, features=FEATURES)
    loaded, document = load_model(tmp_path / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert document["vocab"] == VOCAB


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("vocab"), "is not a complete model file: it has no vocab"),
        (lambda d: d["config"].update(hidden_dim=7), "does not hold a consistent model: size mismatch for init_h"),
        (
            lambda d: d.update(vocab=["a"]),
            "does not hold a consistent model: 1 words in its vocabulary, 10 in its config",
        ),
        (lambda d: d["config"].update(colour="red"), "does not hold a consistent model: .*unexpected keyword.*colour"),
        (lambda d: d.update(format="something else"), "is not a model file written by this workflow"),
        (lambda d: d["features"].update(image_size="64"), "its features entry needs encoder, layer"),
        (lambda d: d["config"].update(hidden_dim=-5), "its config needs positive integer"),
        (lambda d: d["state_dict"].update({"out.bias": torch.zeros(10, dtype=torch.long)}), "not a table of float32"),
        (lambda d: d.update(vocab=list(range(10))), "its vocab is not a list of words"),
        (lambda d: d.update(vocab=VOCAB[::-1]), "its vocabulary does not begin with <pad>, <start>, <end>, <unk>"),
    ],
)
def test_an_inconsistent_model_file_gets_one_line_naming_what_is_wrong(tmp_path, change, message):
    model = small_model()
    save_model(tmp_path / "model.pt", model, model.state_dict(), vocab=VOCAB, features=FEATURES)
    document = torch.load(tmp_path / "model.pt", weights_only=True)
    change(document)
    torch.save(document, tmp_path / "model.pt")
    with pytest.raises(SatError, match=message) as e:
        load_model(tmp_path / "model.pt")
    assert "\n" not in str(e.value)


def test_a_checkpoint_carrying_code_is_refused_without_running_it(stages, tmp_path):
    marker = tmp_path / "ran"
    torch.save({"fingerprint": {}, "payload": RunsCode(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(
        SatError, match="cannot read the checkpoint .*checkpoint.pt .*Weights only load failed.*delete it"
    ):
        run(stages, tmp_path)
    assert not marker.exists() and not (tmp_path / "model.pt").exists()


def test_training_that_would_complete_no_epoch_is_refused_and_writes_no_model(stages, tmp_path):
    with pytest.raises(SatError, match="max_epochs: 0 is less than the minimum of 1"):
        run(stages, tmp_path, max_epochs=0)
    assert not (tmp_path / "model.pt").exists()
