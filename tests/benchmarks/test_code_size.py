"""The code-size count (issue 25's measure) on a snippet counted by hand."""
from benchmarks.code_size import _class_size, code_lines

SNIPPET = '''"""Module docstring,
two lines."""
import os
from typing import (Any,
                    Callable)

X = 1  # a comment


class A:
    """Class docstring."""

    def f(self, a: Any,
          b: Callable) -> int:
        # only a comment
        return (a +
                b)
'''


def test_imports_docstrings_comments_and_blanks_do_not_count():
    # counted: X = 1; class A:; def f(… two lines; return (… two lines
    assert code_lines(SNIPPET) == 6
    assert _class_size(SNIPPET, "A") == {"raw": 8, "code": 5}
    assert _class_size(SNIPPET, "B") is None
