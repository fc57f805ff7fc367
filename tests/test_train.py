"""Training: length batches, model selection on real decoding, determinism, resuming, and bad input."""

from __future__ import annotations

import os
import shutil
import signal

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from show_attend_tell import data, minibatch, objectives, self_critical, text, train, validation, weight_average
from show_attend_tell.demo_stages import offline_features
from show_attend_tell.distributed import World
from show_attend_tell.errors import SatError
from show_attend_tell.model import Captioner, load_model
from show_attend_tell.settings import Settings

TINY = dict(
    embed_dim=16,
    hidden_dim=24,
    attention_dim=12,
    dropout=0.2,
    batch_size=16,
    max_epochs=2,
    learning_rate=0.003,
    max_decode_length=12,
    precision="float32",
)
TIMING = ["tokens_per_s", "train_seconds", "val_seconds"]


def run(stages, out, features_h5=None, seed=0, **settings):
    out.mkdir(parents=True, exist_ok=True)
    return train.train(
        stages / "captions.h5",
        stages / "vocab.csv",
        stages / "captions.csv",
        stages / "lengths.json",
        features_h5 or stages / "features.h5",
        model_out=out / "model.pt",
        log_csv=out / "train_log.csv",
        curves_png=out / "curves.png",
        checkpoint=out / "checkpoint.pt",
        settings=Settings.from_config(TINY | settings),
        seed=seed,
        threads=1,
        progress=False,
    )


def test_length_batches_hold_one_length_each_and_cover_every_caption_once(stages):
    by_length = data.read_length_dictionary(stages / "lengths.json")
    captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
    batches = data.length_batches(by_length, 8, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == sorted(np.flatnonzero(captions.splits == "train").tolist())
    assert all(len(set(captions.lengths[b])) == 1 and len(b) <= 8 for b in batches)
    again = data.length_batches(by_length, 8, seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = data.length_batches(by_length, 8, seed=1, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))


def test_teacher_batch_shifts_the_caption_and_masks_only_padding(stages):
    captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
    rows = np.array([0, 1, 2])
    inputs, targets, mask = data.teacher_batch(captions, rows)
    lengths = captions.lengths[rows]
    assert inputs.shape == targets.shape == mask.shape == (3, lengths.max() + 1)
    assert (inputs[:, 0] == captions.vocab.index(text.START)).all()
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    for r, n in enumerate(lengths):
        assert mask[r].sum() == n + 1 and targets[r, n] == captions.vocab.index(text.END)


def test_training_writes_the_selected_model_its_log_and_curves(stages, tmp_path):
    table = run(stages, tmp_path, max_epochs=3)
    assert list(table["epoch"]) == [1, 2, 3]
    assert list(table.columns) == list(train.LOG_COLUMNS)
    logged = pd.read_csv(tmp_path / "train_log.csv")
    assert (logged["best"].sum() >= 1) and (logged["tokens_per_s"] > 0).all()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "checkpoint.pt").exists()

    model, document = load_model(tmp_path / "model.pt")
    best = logged.loc[logged["val_cider"].idxmax()]  # select_on: cider (the default)
    assert document["epoch"] == best["epoch"] and document["val_cider"] == pytest.approx(best["val_cider"])
    assert document["selected_on"] == "cider" and document["precision"] in ("float32", "bfloat16")
    assert document["features"]["grid"] == [4, 4] and document["vocab"][:4] == list(text.SPECIALS)
    # The logged scores are real greedy decoding, and teacher forcing, of the stored model on the validation split.
    captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
    vset = validation.validation_set(captions, stages / "captions.csv", None)
    measured = validation.measure(
        model,
        captions,
        data.Features(stages / "features.h5"),
        vset,
        beam_size=1,
        max_length=TINY["max_decode_length"],
        batch_size=250,
        world=World(),
    )
    assert measured == pytest.approx(
        {"nll_per_word": best["val_nll_per_word"], "bleu4": best["val_bleu4"], "cider": best["val_cider"]}, rel=1e-4
    )


class OneVectorEverywhere:
    """Features whose L annotation vectors of an image are all the same: a sampled location is the expectation."""

    def __init__(self, features: data.Features) -> None:
        self.features = features

    def __getitem__(self, index: np.ndarray) -> torch.Tensor:
        f = self.features[index]
        return f.mean(1, keepdim=True).expand_as(f).contiguous()


def test_the_expected_context_baseline_drops_the_units_its_training_pass_drops(stages, monkeypatch):
    """Else the hard model's reward would measure two dropout draws as much as the sampled locations."""
    settings = Settings.from_config(
        TINY | {"attention": "hard", "baseline": "expected_context", "semi_sampling_p": 0.0, "dropout": 0.5}
    )
    captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
    features = data.Features(stages / "features.h5")
    torch.manual_seed(0)
    model = Captioner(settings.model_config(len(captions.vocab), features.num_locations, features.feature_dim))
    seen = {}
    objective = objectives.hard_objective

    def spy(out, targets, mask, **terms):
        seen.update(own=objectives.word_log_likelihoods(out.logits, targets, mask), baseline=terms["expected"])
        return objective(out, targets, mask, **terms)

    monkeypatch.setattr(objectives, "hard_objective", spy)
    rows = data.length_batches(data.read_length_dictionary(stages / "lengths.json"), 16, 0, 0)[0]
    minibatch.backward(model, captions, OneVectorEverywhere(features), rows, settings, None, World())
    torch.testing.assert_close(seen["baseline"], seen["own"].detach())  # every caption sampled: reward 0
    assert model.training


def test_same_seed_same_model_other_seed_other_model(stages, tmp_path):
    run(stages, tmp_path / "a", seed=5)
    run(stages, tmp_path / "b", seed=5)
    run(stages, tmp_path / "c", seed=6)
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
    assert (tmp_path / "a" / "model.pt").read_bytes() != (tmp_path / "c" / "model.pt").read_bytes()
    logs = [pd.read_csv(tmp_path / k / "train_log.csv").drop(columns=TIMING) for k in "ab"]
    pd.testing.assert_frame_equal(*logs)


def test_a_moving_average_of_the_weights_is_what_is_validated_and_saved(stages, tmp_path, monkeypatch):
    """With ema_decay the saved weights are the average over steps, not the last step's."""
    last = {}
    update = weight_average.update

    def keep_last(state, model, decay):
        update(state, model, decay)
        last.update({k: p.detach().clone() for k, p in model.named_parameters()})
        last["average"] = {k: v.clone() for k, v in state.average.items()}

    monkeypatch.setattr(weight_average, "update", keep_last)
    run(stages, tmp_path, max_epochs=1, ema_decay=0.9)
    model, _ = load_model(tmp_path / "model.pt")
    saved = dict(model.named_parameters())
    assert all(torch.equal(saved[k], v) for k, v in last["average"].items())
    assert not all(torch.equal(saved[k], last[k]) for k in last["average"])


def sigterm_at_batch(monkeypatch, batch):
    """The process receives SIGTERM (as from a cluster pre-empting the job) during training batch ``batch``."""
    step, calls = minibatch.backward, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == batch:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    monkeypatch.setattr(train, "backward", step_then_signal)


@pytest.mark.parametrize(
    "changes",
    [
        {"attention": "soft"},
        {"attention": "hard"},
        {"attention": "hard", "baseline": "expected_context"},
        {"attention": "soft", "ema_decay": 0.9},
    ],
)
def test_a_job_stopped_by_sigterm_resumes_to_the_same_model(stages, tmp_path, monkeypatch, changes):
    run(stages, tmp_path / "clean", **changes)
    out = tmp_path / "resumed"
    with monkeypatch.context() as m:
        sigterm_at_batch(m, 3)
        with pytest.raises(SatError, match="stopped by SIGTERM in epoch 1; checkpoint saved"):
            run(stages, out, **changes)
    assert (out / "checkpoint.pt").exists() and not (out / "model.pt").exists()
    run(stages, out, **changes)
    assert (out / "model.pt").read_bytes() == (tmp_path / "clean" / "model.pt").read_bytes()
    logs = [pd.read_csv(d / "train_log.csv").drop(columns=TIMING) for d in (out, tmp_path / "clean")]
    pd.testing.assert_frame_equal(*logs)


def test_self_critical_epochs_follow_the_cross_entropy_ones_from_their_selected_weights(stages, tmp_path, monkeypatch):
    run(stages, tmp_path / "xe", max_epochs=2)
    selected, _ = load_model(tmp_path / "xe" / "model.pt")
    seen = []
    step = self_critical.backward

    def first_weights(net, *args, **kwargs):
        seen.append({k: v.clone() for k, v in net.state_dict().items()} if not seen else None)
        return step(net, *args, **kwargs)

    monkeypatch.setattr(self_critical, "backward", first_weights)
    table = run(stages, tmp_path / "sc", max_epochs=2, self_critical_epochs=2, self_critical_learning_rate=1e-3)
    assert list(table["objective"]) == ["cross_entropy"] * 2 + ["self_critical"] * 2
    for k, v in selected.state_dict().items():
        torch.testing.assert_close(seen[0][k], v, rtol=0, atol=0)
    critical = table[table["objective"] == "self_critical"]
    assert (critical["reward"] > 0).all() and table["reward"][:2].isna().all()
    assert (critical["learning_rate"] == 1e-3).all()
    model, document = load_model(tmp_path / "sc" / "model.pt")
    best = table.loc[table["val_cider"].idxmax()]  # the best of all epochs, self-critical or not
    assert document["epoch"] == best["epoch"]


def test_a_job_stopped_in_a_self_critical_epoch_resumes_to_the_same_model(stages, tmp_path, monkeypatch):
    changes = dict(max_epochs=1, self_critical_epochs=2, self_critical_learning_rate=1e-3, self_critical_batch_size=16)
    run(stages, tmp_path / "clean", **changes)
    step, calls = self_critical.backward, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # in the second self-critical epoch (30 images, batches of 16)
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    out = tmp_path / "resumed"
    with monkeypatch.context() as m:
        m.setattr(self_critical, "backward", step_then_signal)
        with pytest.raises(SatError, match="stopped by SIGTERM in epoch 3; checkpoint saved"):
            run(stages, out, **changes)
    run(stages, out, **changes)
    assert (out / "model.pt").read_bytes() == (tmp_path / "clean" / "model.pt").read_bytes()
    logs = [pd.read_csv(d / "train_log.csv").drop(columns=TIMING) for d in (out, tmp_path / "clean")]
    pd.testing.assert_frame_equal(*logs)


def test_a_checkpoint_of_other_settings_is_refused_naming_them(stages, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        sigterm_at_batch(m, 2)
        with pytest.raises(SatError, match="stopped by SIGTERM"):
            run(stages, tmp_path)
    with pytest.raises(SatError, match=r"other settings or data:\n  settings.hidden_dim \(24 then, 32 now\)"):
        run(stages, tmp_path, hidden_dim=32)
    assert not (tmp_path / "model.pt").exists() and (tmp_path / "checkpoint.pt").exists()


def test_an_unreadable_checkpoint_says_to_delete_it(stages, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"torn")
    with pytest.raises(SatError, match="cannot read the checkpoint .* delete it"):
        run(stages, tmp_path)


@pytest.mark.parametrize(
    "edit",
    [{"epoch": 5}, {"best_epoch": 0}, {"step": -3}, {"best_state": {"embed.weight": torch.zeros(2, 2)}}],
    ids=["epochs-without-logs", "best-epoch-without-weights", "negative-batch", "weights-of-another-model"],
)
def test_an_edited_checkpoint_is_refused_not_turned_into_a_model(stages, tmp_path, monkeypatch, edit):
    with monkeypatch.context() as m:
        sigterm_at_batch(m, 2)
        with pytest.raises(SatError, match="stopped by SIGTERM"):
            run(stages, tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["progress"].update(edit)
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(SatError, match="cannot continue the checkpoint .*; delete it to train from the start"):
        run(stages, tmp_path)
    assert not (tmp_path / "model.pt").exists()


def test_outputs_that_cannot_be_written_stop_training_before_it_starts(stages, tmp_path):
    with pytest.raises(SatError, match="cannot write /proc/self/model.pt"):
        train.train(
            *(stages / name for name in ("captions.h5", "vocab.csv", "captions.csv", "lengths.json", "features.h5")),
            model_out="/proc/self/model.pt",
            log_csv=tmp_path / "train_log.csv",
            curves_png=tmp_path / "curves.png",
            checkpoint=tmp_path / "checkpoint.pt",
            settings=Settings.from_config(TINY),
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []  # no epoch ran: no checkpoint


def test_nan_loss_stops_with_where_it_happened_and_writes_no_model(stages, tmp_path):
    broken = tmp_path / "features.h5"
    shutil.copy(stages / "features.h5", broken)
    with h5py.File(broken, "r+") as f:
        values = f["features"][:]
        values[:] = np.inf
        f["features"][:] = values
    with pytest.raises(SatError, match=r"the loss became nan in epoch 1, batch 1 .* lower train.learning_rate"):
        run(stages, tmp_path / "out", features_h5=broken)
    assert not (tmp_path / "out" / "model.pt").exists()


def test_a_vocabulary_of_another_encoding_is_refused(stages, tmp_path):
    vocab = pd.read_csv(stages / "vocab.csv", keep_default_na=False)
    vocab.iloc[:-3].to_csv(tmp_path / "vocab.csv", index=False)
    with pytest.raises(SatError, match="encoded with a vocabulary of .* rerun the encode stage"):
        data.read_encoded(stages / "captions.h5", tmp_path / "vocab.csv")


def test_features_of_another_grid_are_refused_at_decoding(stages, tmp_path):
    run(stages, tmp_path, max_epochs=1)
    _, document = load_model(tmp_path / "model.pt")
    offline_features(stages / "images.csv", tmp_path / "f96.h5", 96)
    with pytest.raises(SatError, match=r"grid: \[4, 4\] when trained, \[6, 6\] in"):
        data.check_features(document, data.Features(tmp_path / "f96.h5"))


def test_features_of_other_images_are_refused(stages, tmp_path):
    captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
    shutil.copy(stages / "features.h5", tmp_path / "features.h5")
    with h5py.File(tmp_path / "features.h5", "r+") as f:
        splits = f["splits"].asstr()[:]
        del f["splits"]
        f.create_dataset("splits", data=list(np.roll(splits, 1)), dtype=h5py.string_dtype())
    with pytest.raises(SatError, match="disagree on image splits"):
        data.Features(tmp_path / "features.h5").check_images(captions)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hiden_dim": 3}, r"\(top level\): Additional properties are not allowed \('hiden_dim' was unexpected\)"),
        ({"batch_size": -4}, r"batch_size: -4 is less than the minimum of 1"),
        ({"batch_size": "64"}, r"batch_size: '64' is not of type 'integer'"),
        ({"dropout": 2.0}, r"dropout: 2.0 is greater than the maximum of 1"),
        ({"max_epochs": 0}, r"max_epochs: 0 is less than the minimum of 1"),
        ([1, 2], r"\(top level\): \[1, 2\] is not of type 'object'"),
    ],
)
def test_bad_settings_get_the_workflows_one_line_message(settings, message):
    with pytest.raises(
        SatError, match=r"^invalid training settings \(see config.schema.yaml, train\): " + message
    ) as e:
        Settings.from_config(settings)
    assert "\n" not in str(e.value)
