"""Settings: one typed pydantic model per config section, the one place a setting's default and bounds live.

Why pydantic models and not bounds in function signatures: confection (what spaCy 3.8 resolves configs with)
checks a value's base type but ignores the bounds in ``Annotated`` metadata, so ``num_negatives = -2`` would reach
the sampler. A model declares each key once — type, bounds, default, why — and is read by everything that needs
the key: a component factory's ``default_config`` (``defaults``), the factory itself (``load``), registered
functions (``checked``), CLI options and the training loop. Errors name the section and the key::

    [components.esco_skill_ranker] top_k must be >= 1, got 0

Convention: ``class XSettings(Settings)``, one field per key, typed with pydantic's strict scalars (``StrictInt``,
``StrictFloat``, ``StrictBool``, ``StrictStr``, re-exported here: a config's ``"3"`` or ``true`` is not a count)
and ``Field(default, ge=..., le=...)`` for bounds; lists in configs fill ``Tuple[...]`` fields.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple, Type, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, validate_call

__all__ = ["Field", "Settings", "StrictBool", "StrictFloat", "StrictInt", "StrictStr", "checked", "config_error"]

from pipeline.errors import ConfigError

M = TypeVar("M", bound="Settings")
F = TypeVar("F", bound=Callable[..., Any])

# pydantic's error types → how the message says the bound (the rest use pydantic's own wording).
_BOUND_WORDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


class Settings(BaseModel):
    """Base of every settings model: unknown keys are errors, values are not coerced across types (``"3"`` is not
    3, ``1`` is not ``True``), and a settings object is immutable once checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def load(cls: Type[M], section: str, values: Mapping[str, Any]) -> M:
        """The settings of ``[section]`` from a config's (or a caller's) values; a ConfigError naming the key
        when one is unknown, of the wrong type or out of bounds."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as err:
            raise config_error(section, err) from None

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        """Every key with its default, as a config section holds it (for a factory's ``default_config``)."""
        return cls().model_dump(mode="json")

    def replace(self: M, section: str, **changes: Any) -> M:
        """A copy with ``changes`` applied and checked like a config section."""
        return type(self).load(section, {**self.model_dump(), **changes})


def config_error(section: str, err: ValidationError, positional: Sequence[str] = ()) -> ConfigError:
    """The first problem of a pydantic ``ValidationError`` as ``[section] key …``; a key of a nested model (a
    sub-block, ``[components.esco_skill_ranker.encoder]`` in a config file) is named under its own section.
    ``positional``: the parameter names of a checked function, whose positional arguments pydantic numbers."""
    problem = err.errors()[0]
    loc = list(problem["loc"])
    if loc and isinstance(loc[0], int) and loc[0] < len(positional):
        loc[0] = positional[loc[0]]
    section, key = _located(section, loc)
    value = problem.get("input")
    kind = problem["type"]
    bound = (problem.get("ctx") or {})
    if kind == "value_error":  # a validator's own ValueError says what the key must be
        return ConfigError(f"[{section}] {key} {bound['error']}, got {value!r}")
    if kind in _BOUND_WORDS:
        limit = next(iter(bound.values()))
        return ConfigError(f"[{section}] {key} must be {_BOUND_WORDS[kind]} {limit}, got {value!r}")
    if kind == "extra_forbidden":
        return ConfigError(f"[{section}] unknown key '{key}'")
    if kind == "literal_error":
        return ConfigError(f"[{section}] {key} must be {bound.get('expected', 'one of the allowed values')}, "
                           f"got {value!r}")
    message = problem["msg"][:1].lower() + problem["msg"][1:]
    return ConfigError(f"[{section}] {key}: {message}, got {value!r}")


def _located(section: str, loc: Sequence[Union[str, int]]) -> Tuple[str, str]:
    """(section, key) of a pydantic error location: ``("encoder", "backend")`` under ``components.x`` is
    ``backend`` of ``[components.x.encoder]``; list positions stay on the key (``interpolation[0]``)."""
    named = [i for i, part in enumerate(loc) if isinstance(part, str)]
    if not named:
        return section, "(section)"
    last = named[-1]
    key = str(loc[last]) + "".join(f"[{part}]" for part in loc[last + 1:])
    return ".".join([section, *map(str, loc[:last])]), key


def checked(section: str) -> Callable[[F], F]:
    """Check every argument of a registered function (or ``__init__``) against its type hints on each call, with
    pydantic (``validate_call``, strict: no coercion), raising a ConfigError that names ``[section] key``."""

    def decorate(func: F) -> F:
        validated = validate_call(config=ConfigDict(strict=True, arbitrary_types_allowed=True))(func)
        names = list(inspect.signature(func).parameters)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return validated(*args, **kwargs)
            except ValidationError as err:
                raise config_error(section, err, names) from None

        return wrapper  # type: ignore[return-value]

    return decorate
