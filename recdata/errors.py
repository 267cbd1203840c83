"""Errors about the user's data, as opposed to bugs: the command line prints them as one
line and exits 1, without a traceback."""


class DataError(ValueError):
    """The files are not what the loader reads (no header, a missing column, dates of two
    orders, an unknown data set name), or a synthetic size cannot be generated: the user's
    data or settings to fix, not a bug to trace."""


class TooLittleData(DataError):
    """The data loads, but a stage has nothing to learn from (no tag frequent enough, no
    user with enough events): a larger data set, or a smaller setting, is the fix."""
