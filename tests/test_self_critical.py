"""Self-critical fine-tuning: CIDEr-D as the coco-caption toolkit computes it, sampling, and the policy gradient."""

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from show_attend_tell import self_critical as sc
from show_attend_tell.model import Captioner, ModelConfig
from show_attend_tell.text import END, PAD, SPECIALS, START, UNK

REFERENCES = {
    1: ["a dog runs on the green grass", "a brown dog is running across a field", "the dog plays outside"],
    2: ["two children play in the snow", "kids are playing in the snow"],
    3: ["a man rides a bike down the street", "a person riding a bicycle", "a man on a bike"],
    4: ["a red car parked by the road", "a car on the street"],
}
CANDIDATES = {
    1: "a dog runs across the grass",
    2: "children play in the snow in the snow",
    3: "a man on a bike on a bike",
    4: "",
}


def test_cider_d_equals_the_toolkits_per_image_scores_with_the_same_references():
    _, toolkit = Cider().compute_score(REFERENCES, {i: [c] for i, c in CANDIDATES.items()})
    scorer = sc.CiderD(REFERENCES)
    ours = [scorer.score(i, CANDIDATES[i].split()) for i in REFERENCES]
    np.testing.assert_allclose(ours, toolkit, rtol=1e-9, atol=1e-12)


def test_a_reference_scores_higher_than_a_caption_of_another_image():
    scorer = sc.CiderD(REFERENCES)
    assert scorer.score(2, "kids are playing in the snow".split()) > scorer.score(2, "a red car".split())


VOCAB = [*SPECIALS, "a", "dog", "runs", "on", "grass", "red", "car"]


def _model(seed: int = 0) -> Captioner:
    torch.manual_seed(seed)
    config = ModelConfig(len(VOCAB), 4, 6, embed_dim=8, hidden_dim=12, attention_dim=5, dropout=0.0)
    return Captioner(config).eval()


def test_samples_end_once_then_pad_and_never_draw_the_banned_words():
    model, features = _model(), torch.randn(3, 4, 6)
    torch.manual_seed(1)
    tokens = sc.sample(model, features, VOCAB, samples=4, max_length=5)
    assert tokens.shape[0] == 12 and tokens.shape[1] <= 6
    end, pad = VOCAB.index(END), VOCAB.index(PAD)
    for row in tokens.tolist():
        assert row.count(end) == 1
        after = row[row.index(end) + 1 :]
        assert all(w == pad for w in after)
        assert not {VOCAB.index(START), VOCAB.index(UNK)} & set(row[: row.index(end)])
    assert len({tuple(r) for r in tokens.tolist()}) > 1  # drawn, not argmax


def test_advantage_is_the_reward_less_the_mean_of_the_images_other_samples():
    reward = np.array([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    np.testing.assert_allclose(sc.advantages(reward, 3), [-1.5, 0.0, 1.5, 0.0, 0.0, 0.0])


def test_the_policy_gradient_is_that_of_minus_advantage_times_each_sampled_captions_log_probability():
    model, features = _model(), torch.randn(2, 4, 6)
    torch.manual_seed(2)
    tokens = sc.sample(model, features, VOCAB, samples=3, max_length=4)
    advantage = torch.tensor([1.0, -0.5, 0.25, 2.0, -1.0, 0.5])
    # In chunks of 4 captions sorted by length: two forward and backward passes.
    terms = sc.policy_gradient(model, features, tokens, advantage, VOCAB, samples=3, precision_name="float32", chunk=4)
    ours = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    # log p of each caption by feeding its words one at a time, with the banned words out of the softmax.
    banned = [VOCAB.index(w) for w in (PAD, START, UNK)]
    expected = []
    for row, ids in enumerate(tokens.tolist()):
        ids = ids[: ids.index(VOCAB.index(END)) + 1]
        inputs = torch.tensor([[VOCAB.index(START), *ids[:-1]]])
        logits = model(features[row // 3 : row // 3 + 1], inputs).logits[0]
        logits[:, banned] = -torch.inf
        logp = torch.log_softmax(logits, -1)[torch.arange(len(ids)), ids].sum()
        expected.append(-advantage[row] * logp)
    loss = torch.stack(expected).mean()
    loss.backward()
    assert float(terms.loss) == pytest.approx(float(loss.detach()), rel=1e-5)
    for k, p in model.named_parameters():
        torch.testing.assert_close(ours[k], p.grad, rtol=1e-4, atol=1e-6)
