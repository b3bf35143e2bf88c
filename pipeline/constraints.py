"""Bounds on config values, declared once as type hints and checked where the values arrive.

The registered functions and the settings carry pydantic's constrained types (``NonNegativeInt``,
``conint(ge=1)``, ``confloat(gt=0, le=1)``: ``Annotated[int, Ge(0)]`` and so on). Why a checker of our own:
confection (1.3, what spaCy 3.8 resolves configs with) checks a value's base type against the hint (an int where
an int is due, a ``Literal`` member) but ignores the bounds in ``Annotated`` metadata, so ``num_negatives = -2``
would reach the sampler. ``checked`` reads the same hints and raises a ``ConfigError`` that names the section and
the key, so one declaration both documents and enforces a setting.
"""

from __future__ import annotations

import functools
import inspect
import operator
from typing import (
    Annotated,
    Any,
    Callable,
    Dict,
    Literal,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, confloat, conint

from pipeline.errors import ConfigError

__all__ = [
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "check_value",
    "check_values",
    "checked",
    "confloat",
    "conint",
]

F = TypeVar("F", bound=Callable[..., Any])

Probability = confloat(ge=0.0, le=1.0)

# annotated_types bound attribute → (test the value must pass, how the message says it)
_BOUNDS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


def check_value(section: str, key: str, value: Any, hint: Any) -> None:
    """Raise ConfigError naming ``[section] key`` unless ``value`` fits ``hint`` (base type, bounds, literals)."""
    base, metadata = (get_args(hint)[0], get_args(hint)[1:]) if get_origin(hint) is Annotated else (hint, ())
    if get_origin(base) is Literal:
        if value not in get_args(base):
            raise ConfigError(f"[{section}] {key} must be one of {list(get_args(base))}, got {value!r}")
        return
    if base is bool and not isinstance(value, bool):
        raise ConfigError(f"[{section}] {key} must be true or false, got {value!r}")
    if base in (int, float):
        _check_number(section, key, value, base)
    for marker in metadata:
        for attr, (test, symbol) in _BOUNDS.items():
            bound = getattr(marker, attr, None)
            if bound is not None and not test(value, bound):
                raise ConfigError(f"[{section}] {key} must be {symbol} {bound}, got {value!r}")


def _check_number(section: str, key: str, value: Any, base: type) -> None:
    # bool is an int to Python but never a count or a rate in a config
    wanted = (int,) if base is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise ConfigError(f"[{section}] {key} must be {base.__name__}, got {value!r}")


def checked(section: str) -> Callable[[F], F]:
    """Check every argument of the decorated function (or ``__init__``) against its type hint on each call.

    Hints are resolved on the first call, so ``from __future__ import annotations`` and forward references work.
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        hints: Dict[str, Any] = {}

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not hints:
                hints.update(get_type_hints(func, include_extras=True))
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            for name, value in bound.arguments.items():
                if name != "self" and name in hints:
                    check_value(section, name, value, hints[name])
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def check_values(section: str, owner: Callable[..., Any], **values: Any) -> None:
    """Check named values against ``owner``'s parameter hints, for a section known only at run time (a component
    named in the config: ``[components.NAME]``)."""
    hints = get_type_hints(owner, include_extras=True)
    for key, value in values.items():
        check_value(section, key, value, hints[key])
