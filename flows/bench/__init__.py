"""The online-vs-batch benchmark's parts and the measurement tools of the flows layer.

:mod:`flows.benchmark` is the Prefect flow (``python -m flows.benchmark``); it composes
:mod:`.stream` (the replayed stream and its labels), :mod:`.strategies` (online and batch
learners), :mod:`.plan` (defaults chosen from the data, the time budget), :mod:`.progress`
and :mod:`.report`. Commands here:

| command | does |
|---|---|
| ``python -m flows.bench.daily`` | writes a daily multi-decade history to check the data-chosen defaults on |
| ``python -m flows.bench.model_choice`` | measures candidate tree models on a lake's history |
| ``python -m flows.bench.shapes_matrix`` | runs every README command on every stream shape |

Nothing below the flows layer imports this package.
"""
