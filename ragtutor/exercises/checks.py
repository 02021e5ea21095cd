"""The machinery of the exercise checks: registration, failures that explain themselves, and the
comparisons every chapter's checks are built from (see the package docstring)."""
import copy
import functools
import numbers
import re
import reprlib

import numpy as np

__all__ = ["EXERCISES", "ExerciseFailed", "exercise", "check", "check_equal", "check_close",
           "check_function"]

EXERCISES = {}  # exercise number ("1.2") -> its registered check, filled by @exercise

_MISSING = object()  # "no expected/got to show", distinct from a legitimate None
_NUMBER = re.compile(r"^(\d+)\.(\d+)$")

# Short, readable reprs of a learner's values: long lists and strings are elided in the middle.
_repr = reprlib.Repr()
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdict = 10
_repr.maxstring, _repr.maxother = 120, 300


def _show(value):
    if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
        return f"{_repr.repr(value)} (shape {list(value.shape)})"
    return _repr.repr(value)


class ExerciseFailed(AssertionError):
    """A learner's answer is wrong. ``str()`` gives the problem, expected, got and hint lines.

    ``expected`` and ``got`` are shown only when given (``None`` is a value worth showing).
    ``exercise`` is the exercise number, filled in by :func:`exercise` when the check runs.
    """

    def __init__(self, problem, *, expected=_MISSING, got=_MISSING, hint=None):
        super().__init__(problem)
        self.problem, self.expected, self.got, self.hint = problem, expected, got, hint
        self.exercise = None

    def __str__(self):
        lead = f"Exercise {self.exercise}: " if self.exercise else ""
        lines = [lead + self.problem]
        if self.expected is not _MISSING:
            lines.append(f"  expected: {_show(self.expected)}")
        if self.got is not _MISSING:
            lines.append(f"  got:      {_show(self.got)}")
        if self.hint:
            lines.append(f"  hint:     {self.hint}")
        return "\n".join(lines)


def exercise(number):
    """Register the decorated function as the check of exercise ``number`` (``"chapter.index"``).

    The function must be named ``chNN_...`` with NN its two-digit chapter. When it returns, the
    check prints ``✓ Exercise N.M passed`` followed by the message it returned, if any; when it
    raises :class:`ExerciseFailed`, the error names the exercise.
    """
    match = _NUMBER.match(number) if isinstance(number, str) else None
    if not match:
        raise ValueError(f"an exercise number looks like '1.2' (chapter.index), got {number!r}")
    prefix = f"ch{int(match[1]):02d}_"

    def register(check_answer):
        if not check_answer.__name__.startswith(prefix):
            raise ValueError(f"the check of exercise {number} must be named {prefix}..., "
                             f"got {check_answer.__name__}")
        # The same name again is a notebook cell run twice; another name is a mistake.
        if number in EXERCISES and EXERCISES[number].__name__ != check_answer.__name__:
            raise ValueError(f"exercise {number} already has a check: "
                             f"{EXERCISES[number].__name__}")

        @functools.wraps(check_answer)
        def run(*args, **kwargs):
            __tracebackhide__ = True  # pytest and IPython leave the check's frames out of tracebacks
            try:
                message = check_answer(*args, **kwargs)
            except ExerciseFailed as failure:
                failure.exercise = number
                raise
            print(f"✓ Exercise {number} passed" + (f": {message}" if message else "."))

        run.exercise = number
        EXERCISES[number] = run
        return run

    return register


def check(condition, problem, *, expected=_MISSING, got=_MISSING, hint=None):
    """Raise :class:`ExerciseFailed` with ``problem`` (and what is given of the rest) unless
    ``condition`` holds. The building block for anything the other helpers do not cover."""
    __tracebackhide__ = True
    if not condition:
        raise ExerciseFailed(problem, expected=expected, got=got, hint=hint)


def _check_not_none(got, expected, what, hint):
    __tracebackhide__ = True
    check(got is not None or expected is None,
          f"{what} is None: does your code `return` its result (a bare `print` returns None)?",
          expected=expected, got=got, hint=hint)


def _as_array(value):
    if hasattr(value, "detach"):  # a torch tensor, possibly requiring grad
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _difference(missing, extra, kind=""):
    """"misses {..}", "has {..} too many" or both, for a set or a dict's keys."""
    parts = ([f"misses {kind}{_show(missing)}"] if missing else []) + (
        [f"has {kind}{_show(extra)} too many"] if extra else [])
    return " and ".join(parts)


def check_equal(got, expected, *, what="your answer", hint=None):
    """Check that ``got == expected`` exactly: for strings, integers, ids, lists, sets, dicts.

    The message points at the difference: a wrong length, the first differing position of a
    list or tuple (either may stand for the other), missing and extra set items or dict keys.
    Arrays and tensors must be equal element by element; compare floats with :func:`check_close`.
    """
    __tracebackhide__ = True
    _check_not_none(got, expected, what, hint)
    if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
        check(len(got) == len(expected), f"{what} has {len(got)} items, expected {len(expected)}",
              expected=expected, got=got, hint=hint)
        for index, (item, wanted) in enumerate(zip(got, expected)):
            check_equal(item, wanted, what=f"{what}[{index}]", hint=hint)
        return
    if isinstance(expected, (set, frozenset)) and isinstance(got, (set, frozenset)):
        check(got == expected, f"{what} {_difference(expected - got, got - expected)}",
              expected=expected, got=got, hint=hint)
        return
    if isinstance(expected, dict) and isinstance(got, dict):
        check(got.keys() == expected.keys(), f"{what} " + _difference(
            expected.keys() - got.keys(), got.keys() - expected.keys(), "the keys "),
            expected=expected, got=got, hint=hint)
        for key in expected:
            check_equal(got[key], expected[key], what=f"{what}[{key!r}]", hint=hint)
        return
    both_numbers = isinstance(got, numbers.Number) and isinstance(expected, numbers.Number)
    if not both_numbers and not hasattr(expected, "shape"):
        check(isinstance(got, type(expected)),
              f"{what} is of type {type(got).__name__}, expected {type(expected).__name__}",
              expected=expected, got=got, hint=hint)
    if hasattr(expected, "shape") or hasattr(got, "shape"):
        got_array, expected_array = _as_array(got), _as_array(expected)
        check(got_array.shape == expected_array.shape,
              f"{what} has shape {list(got_array.shape)}, expected {list(expected_array.shape)}",
              expected=expected, got=got, hint=hint)
        equal = bool(np.all(got_array == expected_array))
    else:
        equal = got == expected
    check(equal, f"{what} is wrong", expected=expected, got=got, hint=hint)


def check_close(got, expected, *, what="your answer", rtol=1e-5, atol=1e-8, hint=None):
    """Check that a number, list of numbers, array or tensor equals ``expected`` within tolerance.

    Element-wise ``|got - expected| <= atol + rtol * |expected|`` (NumPy's ``isclose``), after
    checking that the shapes agree. For an array the message names the first wrong entry and how
    many are wrong.
    """
    __tracebackhide__ = True
    _check_not_none(got, expected, what, hint)
    got_array, expected_array = _as_array(got), _as_array(expected).astype(float)
    check(got_array.dtype.kind in "iuf", f"{what} should be a number or an array of numbers, "
          f"not of type {type(got).__name__}", expected=expected, got=got, hint=hint)
    got_array = got_array.astype(float)
    check(got_array.shape == expected_array.shape,
          f"{what} has shape {list(got_array.shape)}, expected {list(expected_array.shape)}",
          expected=expected, got=got, hint=hint)
    close = np.isclose(got_array, expected_array, rtol=rtol, atol=atol)
    if close.all():
        return
    if got_array.ndim == 0:
        raise ExerciseFailed(f"{what} is wrong", expected=expected, got=got, hint=hint)
    first = tuple(int(i) for i in np.argwhere(~close)[0])
    raise ExerciseFailed(
        f"{(~close).sum()} of {close.size} entries of {what} are wrong; the first is "
        f"{what}[{', '.join(map(str, first))}]", expected=expected_array[first].item(),
        got=got_array[first].item(), hint=hint)


def check_function(function, cases, *, compare=check_equal, hint=None):
    """Call the learner's ``function`` on test inputs and compare each result with ``compare``.

    ``cases`` is a list of ``(args, expected)``, ``args`` a tuple of positional arguments (a
    lone argument need not be wrapped in a tuple). ``compare`` is :func:`check_equal` or
    :func:`check_close` (use ``functools.partial`` to change its tolerance). The message shows the
    call that went wrong; a function that still raises ``NotImplementedError`` is reported as not
    written yet, and any other exception as what it is, with the learner's traceback above it.
    """
    __tracebackhide__ = True
    name = getattr(function, "__name__", "your function")
    check(callable(function), f"expected a function, got {_show(function)} of type "
          f"{type(function).__name__}", hint=hint)
    for args, expected in cases:
        args = args if isinstance(args, tuple) else (args,)
        call = f"{name}({', '.join(_repr.repr(a) for a in args)})"
        try:
            # A copy, so that a function that changes its inputs cannot spoil the next case.
            got = function(*copy.deepcopy(args))
        except NotImplementedError:
            raise ExerciseFailed(f"{name} is not written yet: it still raises "
                                 "NotImplementedError. Replace that line with your code.",
                                 hint=hint) from None
        except Exception as error:
            raise ExerciseFailed(f"{call} raised {type(error).__name__}: {error}",
                                 hint=hint) from error
        compare(got, expected, what=call, hint=hint)


