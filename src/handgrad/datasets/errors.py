"""The one exception type for every data problem."""

from .._errors import ParameterError


class DataError(ParameterError):
    """A data file or array is missing, damaged or not what was expected.

    The message names the file (or array) and what is wrong with it. Where it also names
    a parameter of the call (``label_column``), the message is a template and the
    parameter is data (:class:`~handgrad._errors.ParameterError`): the command line
    shows its flag instead.
    """
