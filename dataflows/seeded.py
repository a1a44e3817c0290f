"""River estimators whose Gaussians draw from one seeded generator, so their pickles repeat.

River's ``proba.Gaussian`` holds a ``random.Random()`` seeded from the OS (used only by its
``sample()``). ``GaussianNB`` keeps one Gaussian per class and feature, so two runs of the same
replay pickled different checkpoint bytes (the generators' states, ~3.8 KB each: 97% of the
pickle). Here every Gaussian of a model shares one ``random.Random(seed)``: the same seed gives
the same bytes, and the pickle holds one generator. Nothing else changes: ``GaussianNB`` never
draws from it in ``learn_one`` or ``predict_*``, and the model is River's own class (checkpoints
pickled before, with unseeded Gaussians, load and run as they did).

>>> import pickle
>>> a, b = seeded_gaussian_nb(7), seeded_gaussian_nb(7)
>>> for m in (a, b):
...     m.learn_one({"x": 1.0, "y": 2.0}, True)
...     m.learn_one({"x": 3.0}, False)
>>> pickle.dumps(a) == pickle.dumps(b)
True
>>> a.gaussians[True]["x"]._var.ddof  # River's own Gaussian (ddof=0, as GaussianNB makes it)
0
"""

from __future__ import annotations

import collections
import functools
import random

from river import naive_bayes, proba


def _gaussian(rng: random.Random) -> proba.Gaussian:
    g = naive_bayes.GaussianNB._make_gaussian()  # River's recipe (ddof=0)
    g._rng = rng
    return g


def seeded_gaussian_nb(seed: int) -> naive_bayes.GaussianNB:
    """River's ``GaussianNB`` whose Gaussians share ``random.Random(seed)``."""
    model = naive_bayes.GaussianNB()
    model.gaussians = collections.defaultdict(
        functools.partial(collections.defaultdict, functools.partial(_gaussian, random.Random(seed))))
    return model
