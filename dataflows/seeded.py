"""River estimators whose Gaussians draw from a seeded generator, so their pickles repeat.

River's ``proba.Gaussian`` holds a ``random.Random()`` seeded from the OS (used only by its
``sample()``). ``GaussianNB`` keeps one Gaussian per class and feature, and a classification
tree's ``GaussianSplitter`` one per class for each numeric feature of each leaf, so two runs of
the same replay pickled different checkpoint bytes (the generators' states, ~3.8 KB each: 97% of
a naive-bayes or Hoeffding tree pickle). Here every Gaussian of a model shares one
``random.Random(seed)``: the same seed gives the same bytes, and the pickle holds one generator.
Nothing else changes: nothing draws from them (``sample()`` is not called in learning, splitting
or predicting), and the models are River's own classes (checkpoints pickled before, with
unseeded Gaussians, load and run as they did).

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
from collections.abc import Iterable

from river import naive_bayes, proba
from river.tree.splitter import GaussianSplitter


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


class _Gaussians(dict):
    """A splitter's Gaussians by class; each one stored here draws from ``rng``."""

    def __init__(self, rng: random.Random, items: Iterable = ()) -> None:
        super().__init__(items)
        self.rng = rng

    def __setitem__(self, key, gaussian: proba.Gaussian) -> None:  # River stores a class's new Gaussian
        gaussian._rng = self.rng
        super().__setitem__(key, gaussian)

    def __reduce__(self):
        return type(self), (self.rng, list(self.items()))


class SeededGaussianSplitter(GaussianSplitter):
    """River's ``GaussianSplitter`` whose Gaussians share ``random.Random(seed)`` with its clones'.

    A tree clones the splitter it was given for each numeric feature of each leaf (a forest, for
    each of its trees' leaves): one generator in the model's pickle instead of one per Gaussian.
    (The Gaussians are met where River stores them: no step is added to ``update``, the hot loop of
    a tree's learning.)

    >>> s = SeededGaussianSplitter(seed=3)
    >>> s.update(1.5, "a", 1.0); s.update(2.5, "b", 1.0)
    >>> c = s.clone()
    >>> c.update(0.5, "a", 1.0)
    >>> s._att_dist_per_class["b"]._rng is c._att_dist_per_class["a"]._rng is s._att_dist_per_class.rng
    True
    >>> c._att_dist_per_class["a"].n_samples  # a clone learned nothing
    1.0
    """

    def __init__(self, n_splits: int = 10, seed: int = 0) -> None:
        super().__init__(n_splits)
        self.seed = seed
        self._att_dist_per_class = _Gaussians(random.Random(seed))

    def clone(self, new_params: dict | None = None, include_attributes: bool = False) -> SeededGaussianSplitter:
        new = super().clone(new_params, include_attributes)
        if new.seed == self.seed:
            new._att_dist_per_class.rng = self._att_dist_per_class.rng
        return new
