"""Make the tiny character dataset: pseudo-sentences from a seeded generator, as uint16 ids."""

import json
import os
import random

import numpy as np

WORDS = (
    "the a model learns slowly quickly data batch loss gradient step small large "
    "token sequence attention layer head train valid sample noise signal"
).split()

here = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(7)
text = ". ".join(
    " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(900)
)
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
ids = np.array([stoi[c] for c in text], dtype=np.uint16)
split = int(0.9 * len(ids))
ids[:split].tofile(os.path.join(here, "train.bin"))
ids[split:].tofile(os.path.join(here, "val.bin"))
with open(os.path.join(here, "meta.json"), "w") as fh:
    json.dump({"vocab_size": len(chars)}, fh)
