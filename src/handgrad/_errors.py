"""Errors that name the caller's parameters as data, so that each front end words them.

The library speaks Python (``label_column=0``); the command line speaks flags
(``--label-column 0``). Rather than one rewording the other's text, an error carries
the names of the parameters it is about, and a template with a ``{name}`` field where
each belongs: ``str()`` shows the Python spelling, :meth:`ParameterError.format` any other.
"""

from __future__ import annotations

import re


class ParameterError(ValueError):
    """A :class:`ValueError` whose message names parameters of the call that raised it.

    ``template`` holds a ``{name}`` field for each key of ``parameters``; each maps to the
    value to show beside the name (already as text, e.g. a ``repr``), or None to show the
    name alone. Braces that are not such a field are left as they are, so a template may
    quote any text (a path, a value's ``repr``). ``parameter`` is the first one named.
    """

    def __init__(self, template, **parameters):
        self.template, self.parameters = template, parameters
        super().__init__(self.format())

    @property
    def parameter(self):
        """The (first) parameter the error is about, or None."""
        return next(iter(self.parameters), None)

    def format(self, name=None):
        """The message with each parameter shown as ``name(parameter, value)``; by default
        as Python spells it: ``parameter=value``, or the bare name where value is None."""
        if name is None:
            name = python_words
        if not self.parameters:
            return self.template
        fields = "|".join(map(re.escape, self.parameters))
        return re.sub(r"\{(" + fields + r")\}",
                      lambda m: name(m[1], self.parameters[m[1]]), self.template)

    def __reduce__(self):  # pickling (multiprocessing): rebuilt from its parts
        if type(self).__init__ is not ParameterError.__init__:  # a subclass's own signature
            return super().__reduce__()
        return _rebuild, (type(self), self.template, self.parameters)


def python_words(parameter, value):
    """``label_column=0``, or ``index`` alone when there is no value to show."""
    return parameter if value is None else f"{parameter}={value}"


def _rebuild(cls, template, parameters):
    error = cls.__new__(cls)
    ParameterError.__init__(error, template, **parameters)
    return error
