"""User-facing errors.

Every error a user can cause (a bad file, a bad option, a missing model) is an ``ObliviateError`` whose message is one
line naming the file, the record and the field. The command line prints it and exits with code 2, without a traceback.
"""


class ObliviateError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""

    exit_code = 2


class DataError(ObliviateError):
    """A data file that cannot be read or a record that does not validate."""


class ConfigError(ObliviateError):
    """A bad option, hyperparameter or config file."""


class ModelError(ObliviateError):
    """A model that cannot be found or loaded."""


class TrainingError(ObliviateError):
    """A run that had to stop (diverged loss, nothing to train on)."""


class DataWarning(UserWarning):
    """Data that can be used but probably is not what the user meant (forget and retain overlapping).

    The command line prints each one as a single ``obliviate: warning: ...`` line and carries on.
    """
