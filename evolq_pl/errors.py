"""The project's error base, below every layer (the standard library only).

``EvolQError`` is a bad setting, input or file that the user can fix: its message names the field, the value
and what is accepted. The command line prints such an error as one line (``error: <message>``); any other
exception is a bug and keeps its full traceback. Every error class of the project derives from it, and every
check raises it (it is a ``ValueError``, so ``except ValueError`` still catches it).
"""


class EvolQError(ValueError):
    """A bad value or input, told in one line that names the field, the value and what is accepted."""
