"""The captioner follows the paper's equations, piece by piece, and its hard-attention rule is unbiased."""

from __future__ import annotations

import itertools

import pytest
import torch

from show_attend_tell import objectives
from show_attend_tell.errors import SatError
from show_attend_tell.model import EXPECTED, Captioner, ModelConfig

V, L, D = 11, 6, 5


def make(attention="soft", dropout=0.0, **dims) -> Captioner:
    torch.manual_seed(0)
    sizes = dict(embed_dim=7, hidden_dim=9, attention_dim=8) | dims
    return Captioner(ModelConfig(V, L, D, attention=attention, dropout=dropout, **sizes)).eval()


def batch(b=3, t=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, L, D, generator=g), torch.randint(0, V, (b, t), generator=g)


def reference_step(model, feats, h, c, prev_word, location=None):
    """Eq. 1-7 written out directly from the paper, one image, no fused projections."""
    a, n = model.config.attention_dim, model.config.hidden_dim
    w_h, b_h = model.from_h.weight, model.from_h.bias
    u_att, w_gates, w_beta = w_h[:a], w_h[a : a + 4 * n], w_h[a + 4 * n :]
    e = torch.stack(
        [model.att_score.weight[0] @ torch.tanh(model.att_features(feats[i]) + u_att @ h + b_h[:a]) for i in range(L)]
    )
    alpha = torch.softmax(e, 0)
    context = sum(alpha[i] * feats[i] for i in range(L)) if location is None else feats[location]
    beta = torch.sigmoid(w_beta @ h + b_h[a + 4 * n :])  # a scalar
    z = beta * context
    y = model.embed.weight[prev_word]
    gates = model.gates_y.weight @ y + w_gates @ h + b_h[a : a + 4 * n] + model.gates_z.weight @ z
    i, f, g, o = gates.split(n)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    logits = model.out.weight @ torch.tanh(y + model.out_h(h) + model.out_z.weight @ z) + model.out.bias
    return h, c, alpha, logits


def test_initial_state_comes_from_two_mlps_on_the_mean_annotation():
    model = make()
    feats, _ = batch()
    ctx = model.context(feats)
    h, c = model.initial_state(ctx)
    shuffled = model.initial_state(model.context(feats[:, torch.randperm(L)]))
    torch.testing.assert_close(h, shuffled[0])
    torch.testing.assert_close(c, shuffled[1])
    torch.testing.assert_close(h, model.init_h(feats.mean(1)))
    torch.testing.assert_close(c, model.init_c(feats.mean(1)))
    assert not torch.allclose(h, c)


def test_soft_forward_equals_the_paper_equations_step_by_step():
    model = make()
    feats, inputs = batch()
    out = model(feats, inputs)
    assert out.logits.shape == (3, 4, V) and out.alphas.shape == (3, 4, L) and out.picked is None
    for row in range(3):
        h, c = model.initial_state(model.context(feats[row : row + 1]))
        h, c = h[0], c[0]
        for t in range(4):
            h, c, alpha, logits = reference_step(model, feats[row], h, c, inputs[row, t])
            torch.testing.assert_close(out.alphas[row, t], alpha)
            torch.testing.assert_close(out.logits[row, t], logits)


def test_the_gate_beta_is_one_scalar_per_step():
    model = make()
    a, n = model.config.attention_dim, model.config.hidden_dim
    assert model.from_h.out_features == a + 4 * n + 1


def test_hard_forward_with_imposed_locations_uses_exactly_those_annotations():
    model = make("hard")
    feats, inputs = batch()
    locations = torch.tensor([[0, 5, 2, EXPECTED], [EXPECTED] * 4, [3, 3, 1, 0]])
    out = model(feats, inputs, locations=locations)
    assert torch.equal(out.picked, locations)
    for row in range(3):
        h, c = (s[0] for s in model.initial_state(model.context(feats[row : row + 1])))
        for t in range(4):
            loc = int(locations[row, t])
            h, c, _, logits = reference_step(model, feats[row], h, c, inputs[row, t], None if loc < 0 else loc)
            torch.testing.assert_close(out.logits[row, t], logits)


def test_hard_forward_samples_only_the_rows_asked_to():
    model = make("hard")
    feats, inputs = batch(b=4)
    torch.manual_seed(3)
    out = model(feats, inputs, sample_rows=torch.tensor([True, False, True, False]))
    assert (out.picked[[0, 2]] >= 0).all() and (out.picked[[1, 3]] == EXPECTED).all()
    expected_rows = model(feats[[1, 3]], inputs[[1, 3]])  # a hard model without sampling: the expectation
    torch.testing.assert_close(out.logits[[1, 3]], expected_rows.logits)


def test_soft_model_ignores_sampling_requests():
    model = make("soft")
    feats, inputs = batch()
    torch.testing.assert_close(
        model(feats, inputs, sample_rows=torch.ones(3, dtype=torch.bool)).logits, model(feats, inputs).logits
    )


def test_any_grid_works_and_a_wrong_one_is_refused():
    for locations, dim in ((1, 3), (49, 320), (196, 16)):
        model = Captioner(ModelConfig(V, locations, dim, embed_dim=4, hidden_dim=6, attention_dim=5))
        out = model(torch.randn(2, locations, dim), torch.zeros(2, 3, dtype=torch.long))
        assert out.alphas.shape == (2, 3, locations)
    with pytest.raises(SatError, match=r"shape \(7, 5\) do not fit this model, which was built for L=6"):
        make()(torch.randn(2, 7, 5), torch.zeros(2, 3, dtype=torch.long))


def test_dropout_acts_on_the_deep_output_in_training_only():
    model = make(dropout=0.5)
    feats, inputs = batch()
    model.eval()
    torch.testing.assert_close(model(feats, inputs).logits, model(feats, inputs).logits)
    model.train()
    assert not torch.allclose(model(feats, inputs).logits, model(feats, inputs).logits)


def test_a_given_dropout_mask_is_the_dropout_applied_in_training_and_in_eval_mode():
    model = make(dropout=0.5).train()
    feats, inputs = batch()
    dropped = model.dropout_mask(*inputs.shape, feats.device)
    assert set(dropped.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1 / (1 - p)
    first = model(feats, inputs, dropped=dropped).logits
    torch.testing.assert_close(model(feats, inputs, dropped=dropped).logits, first)
    torch.testing.assert_close(model.eval()(feats, inputs, dropped=dropped).logits, first)
    assert model.dropout_mask(3, 4, feats.device) is None  # eval mode drops nothing
    assert make(dropout=0.0).train().dropout_mask(3, 4, feats.device) is None


def test_padding_steps_contribute_nothing_to_the_loss_or_the_penalty():
    model = make()
    feats, inputs = batch(b=2, t=5)
    targets = torch.randint(0, V, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.float)
    full = objectives.soft_objective(model(feats, inputs), targets, mask, alpha_c=1.0)
    short = objectives.soft_objective(model(feats[1:], inputs[1:, :3]), targets[1:, :3], mask[1:, :3], alpha_c=1.0)
    first = objectives.soft_objective(model(feats[:1], inputs[:1]), targets[:1], mask[:1], alpha_c=1.0)
    torch.testing.assert_close(full.loss, (short.loss + first.loss) / 2)


def test_doubly_stochastic_penalty_is_summed_over_locations():
    alphas = torch.full((1, 2, 4), 0.25)  # two steps of uniform attention over four locations
    mask = torch.ones(1, 2)
    assert objectives.doubly_stochastic(alphas, mask).item() == pytest.approx(4 * (1 - 0.5) ** 2)
    alphas = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]])
    assert objectives.doubly_stochastic(alphas, torch.ones(1, 4)).item() == 0.0


def test_soft_loss_is_the_summed_word_nll_plus_lambda_times_the_penalty():
    model = make()
    feats, inputs = batch()
    targets = torch.randint(0, V, (3, 4))
    mask = torch.ones(3, 4)
    out = model(feats, inputs)
    terms = objectives.soft_objective(out, targets, mask, alpha_c=0.7)
    nll = -torch.log_softmax(out.logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(1)
    penalty = ((1 - out.alphas.sum(1)) ** 2).sum(1)
    torch.testing.assert_close(terms.loss, (nll + 0.7 * penalty).mean())


def exact_gradient(model, feats, inputs, targets):
    """d/dW of L_s = sum_s p(s | a) log p(y | s, a), by enumerating every location sequence s."""
    model.zero_grad()
    steps = inputs.shape[1]
    sequences = torch.tensor(list(itertools.product(range(L), repeat=steps)))
    n = len(sequences)
    out = model(feats.expand(n, -1, -1), inputs.expand(n, -1), locations=sequences)
    mask = torch.ones(n, steps)
    log_p_s = objectives.location_log_probabilities(out.alphas, out.picked, mask).sum(1)
    log_p_y = objectives.word_log_likelihood(out.logits, targets.expand(n, -1), mask)
    (torch.exp(log_p_s) * log_p_y).sum().backward()
    return gradients(model)


def estimated_gradient(
    model, feats, inputs, targets, samples, lambda_r, baseline, expected=False, seed=5, reward_to_go=False
):
    """The eq. 12 rule (no entropy bonus, every image sampled), averaged over ``samples`` draws.

    ``expected``: the reward's baseline is the caption's log-likelihood with the expected context.
    """
    model.zero_grad()
    torch.manual_seed(seed)
    feats, inputs, targets = feats.expand(samples, -1, -1), inputs.expand(samples, -1), targets.expand(samples, -1)
    mask = torch.ones(samples, inputs.shape[1])
    out = model(feats, inputs, sample_rows=torch.ones(samples, dtype=torch.bool))
    with torch.no_grad():
        reference = objectives.word_log_likelihoods(model(feats, inputs).logits, targets, mask) if expected else None
    terms = objectives.hard_objective(
        out,
        targets,
        mask,
        baseline=baseline,
        lambda_r=lambda_r,
        lambda_e=0.0,
        expected=reference,
        reward_to_go=reward_to_go,
    )
    terms.loss.backward()
    return {name: -g for name, g in gradients(model).items()}


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def distance(a, b, names=None):
    """Relative distance of two gradients, over the parameters ``names`` (default: all)."""
    names = names or sorted(a)
    x, y = torch.cat([a[k].flatten() for k in names]), torch.cat([b[k].flatten() for k in names])
    return (torch.linalg.norm(x - y) / torch.linalg.norm(y)).item()


def test_hard_attention_learning_rule_is_an_unbiased_estimate_of_the_exact_gradient():
    model = make("hard", hidden_dim=6, embed_dim=5, attention_dim=4)
    feats, inputs = batch(b=1, t=2, seed=4)
    targets = torch.tensor([[3, 7]])
    exact = exact_gradient(model, feats, inputs, targets)
    estimate = estimated_gradient(model, feats, inputs, targets, 40000, lambda_r=1.0, baseline=-2.4)
    assert distance(estimate, exact) < 0.05
    attention = ["att_score.weight", "att_features.weight", "att_features.bias"]
    assert distance(estimate, exact, attention) < 0.1
    # Without its REINFORCE term the rule gives the attention scores no gradient at all.
    biased = estimated_gradient(model, feats, inputs, targets, 40000, lambda_r=0.0, baseline=-2.4)
    assert "att_score.weight" not in biased or torch.all(biased["att_score.weight"] == 0)
    assert torch.linalg.norm(exact["att_score.weight"]) > 0.01


def test_hard_baseline_does_not_bias_the_estimate():
    model = make("hard", hidden_dim=6, embed_dim=5, attention_dim=4)
    feats, inputs = batch(b=1, t=2, seed=4)
    targets = torch.tensor([[3, 7]])
    exact = exact_gradient(model, feats, inputs, targets)
    for baseline in (0.0, -5.0):
        estimate = estimated_gradient(model, feats, inputs, targets, 40000, lambda_r=1.0, baseline=baseline)
        assert distance(estimate, exact) < 0.1


def test_expected_context_baseline_is_unbiased_and_cuts_the_variance():
    model = make("hard", hidden_dim=6, embed_dim=5, attention_dim=4)
    feats, inputs = batch(b=1, t=2, seed=4)
    targets = torch.tensor([[3, 7]])
    exact = exact_gradient(model, feats, inputs, targets)
    estimate = estimated_gradient(model, feats, inputs, targets, 40000, lambda_r=1.0, baseline=None, expected=True)
    assert distance(estimate, exact) < 0.05
    # With few samples its error is below that of a constant baseline off the caption's log-likelihood.
    errors = {
        kind: [
            distance(estimated_gradient(model, feats, inputs, targets, 200, 1.0, -5.0, kind, seed), exact)
            for seed in range(20)
        ]
        for kind in (False, True)
    }
    assert sum(errors[True]) < 0.5 * sum(errors[False])


@pytest.mark.parametrize("expected", [False, True])
def test_reward_to_go_is_unbiased(expected):
    model = make("hard", hidden_dim=6, embed_dim=5, attention_dim=4)
    feats, inputs = batch(b=1, t=3, seed=4)
    targets = torch.tensor([[3, 7, 1]])
    exact = exact_gradient(model, feats, inputs, targets)
    estimate = estimated_gradient(model, feats, inputs, targets, 40000, 1.0, -2.4, expected, reward_to_go=True)
    assert distance(estimate, exact) < 0.05


def test_reward_to_go_cuts_the_variance_of_the_whole_captions_reward():
    # A step's location is not rewarded for the noise of the words before it, which it cannot change: the
    # attention's gradient (the one REINFORCE estimates) is nearer the exact one with few samples.
    model = make("hard", hidden_dim=6, embed_dim=5, attention_dim=4)
    feats, inputs = batch(b=1, t=3, seed=4)
    targets = torch.tensor([[3, 7, 1]])
    exact = exact_gradient(model, feats, inputs, targets)
    attention = ["att_score.weight", "att_features.weight", "att_features.bias"]
    errors = {
        to_go: [
            distance(
                estimated_gradient(model, feats, inputs, targets, 200, 1.0, None, True, seed, to_go), exact, attention
            )
            for seed in range(20)
        ]
        for to_go in (False, True)
    }
    assert sum(errors[True]) < 0.8 * sum(errors[False])


def test_reward_to_go_sums_each_steps_gain_from_that_step_on():
    torch.testing.assert_close(objectives.to_go(torch.tensor([[1.0, 2.0, 4.0]])), torch.tensor([[7.0, 6.0, 4.0]]))


def test_leave_one_out_rewards_a_caption_only_against_the_others():
    gain = torch.tensor([1.0, 3.0, 5.0, 100.0])
    rows = torch.tensor([True, True, True, False])
    torch.testing.assert_close(objectives.leave_one_out(gain, rows), torch.tensor([-3.0, 0.0, 3.0, 0.0]))
    # A row alone among the sampled ones has no others to be measured against.
    torch.testing.assert_close(
        objectives.leave_one_out(gain, torch.tensor([False, True, False, False])), torch.zeros(4)
    )
    # Per step, each step against the same step of the others.
    steps = torch.stack([gain, 2 * gain], 1)
    torch.testing.assert_close(objectives.leave_one_out(steps, rows)[:, 1], torch.tensor([-6.0, 0.0, 6.0, 0.0]))


@pytest.mark.parametrize("words", [2, 5])
def test_hard_baseline_is_per_word_so_a_caption_is_not_rewarded_for_its_length(words):
    # A caption whose log-likelihood is exactly baseline x its words has reward 0: its sampled locations
    # get no REINFORCE push, however long it is.
    model = make("hard", hidden_dim=6, embed_dim=5, attention_dim=4)
    feats, inputs = batch(b=1, t=words, seed=4)
    targets, mask = torch.randint(0, V, (1, words)), torch.ones(1, words)
    torch.manual_seed(0)
    out = model(feats, inputs, sample_rows=torch.ones(1, dtype=torch.bool))
    per_word = float(objectives.word_log_likelihood(out.logits, targets, mask).detach()) / words
    objectives.hard_objective(out, targets, mask, baseline=per_word, lambda_r=1.0, lambda_e=0.0).loss.backward()
    assert torch.linalg.norm(model.att_score.weight.grad) < 1e-6


def test_entropy_bonus_pushes_attention_towards_uniform():
    model = make("hard")
    feats, inputs = batch()
    mask = torch.ones(3, 4)
    out = model(feats, inputs, sample_rows=torch.zeros(3, dtype=torch.bool))
    entropy = objectives.attention_entropy(out.alphas, mask)
    assert (entropy <= 4 * torch.log(torch.tensor(float(L))) + 1e-5).all()
    uniform = torch.full((1, 4, L), 1 / L)
    torch.testing.assert_close(
        objectives.attention_entropy(uniform, torch.ones(1, 4)), torch.tensor([4 * torch.log(torch.tensor(float(L)))])
    )
