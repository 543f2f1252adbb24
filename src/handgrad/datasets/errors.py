"""The one exception type for every data problem."""


class DataError(ValueError):
    """A data file or array is missing, damaged or not what was expected.

    The message names the file (or array) and what is wrong with it.
    """
