"""Run alone or under torchrun: the gradients of given global minibatches, as the training step computes them.

    python ddp_gradients.py STAGES SETTINGS_JSON OUT.pt
    torchrun --nproc_per_node=2 ddp_gradients.py STAGES SETTINGS_JSON OUT.pt

Rank 0 saves {batch sizes, per-batch gradients by parameter name, per-batch global sums} to OUT.pt.
"""

import json
import sys
from pathlib import Path

import torch

from show_attend_tell import data, minibatch, training_job
from show_attend_tell.distributed import join, leave
from show_attend_tell.model import Captioner
from show_attend_tell.settings import Settings

stages, settings, out = Path(sys.argv[1]), Settings.from_config(json.loads(sys.argv[2])), sys.argv[3]
world = join("cpu")
captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
features = data.Features(stages / "features.h5")
torch.manual_seed(0)
model = Captioner(settings.model_config(len(captions.vocab), features.num_locations, features.feature_dim))
net = training_job.data_parallel(model, world)
first = data.length_batches(data.read_length_dictionary(stages / "lengths.json"), settings.batch_size, 0, 0)[0]
# A full batch, an odd one (unequal shares) and one row (a process without rows joins with weight 0).
batches = [first, first[:3], first[:1]]
results = []
for rows in batches:
    net.zero_grad(set_to_none=True)
    step = minibatch.backward(net, captions, features, rows, settings, None, world)
    results.append({"grads": {n: p.grad.clone() for n, p in model.named_parameters()}, "step": vars(step)})
if world.main:
    torch.save({"sizes": [len(b) for b in batches], "results": results}, out)
leave(world)
