"""The errors of a training or evaluation run that come from what it was given, not from a bug."""

from __future__ import annotations


class RunInputError(ValueError):
    """What a run was given cannot work: a recipe value, the data, a model or processor source, an output
    folder or a checkpoint. The message names the setting or file and what to do.

    ``sgdetr train`` and ``sgdetr evaluate-model`` print it on one line and exit with code 2 (no traceback).
    A ``ValueError``, so code that caught the ``ValueError`` these cases raised before still catches them.
    """


class DamagedCheckpointError(RunInputError):
    """A checkpoint folder that cannot be resumed: a file missing, truncated or replaced, or a
    ``trainer_state.json`` that does not hold a training position."""


class RecipeMismatchError(RunInputError):
    """A resume whose recipe differs from the run's in a setting that changes what the run computes."""


class TrainingDivergedError(RunInputError):
    """The weights or the loss became NaN or infinite: the recipe's learning rate (or its schedule) is too
    high for this model and data."""
