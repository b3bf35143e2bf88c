"""spaCy factories and registered functions whose config keys are the fields of a settings model.

Why a signature is made rather than written: spaCy creates a component by resolving its config block with
confection, which passes one keyword argument per key and checks each name against the function's signature (a
``**values`` catch-all is refused as an "unexpected argument"). Writing every key into the signature again, with
its default, would state each setting a second time beside its model. So the signature is built from the model
(``settings_signature``): one keyword-only parameter per field with the model's default, typed ``Any`` so that
confection hands every value on and the model alone checks it — errors are then ConfigErrors that name the key,
whichever way the value came in (config file, ``--set``, ``nlp.add_pipe(config=...)``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Type, TypeVar

from spacy.language import Language

from pipeline.settings import Settings

S = TypeVar("S", bound=Settings)
T = TypeVar("T")


def settings_signature(settings: Type[Settings], *leading: str) -> inspect.Signature:
    """``(*leading, *, field=default, ...)`` for every field of ``settings``, defaults as a config holds them."""
    defaults = settings.defaults()
    params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in leading]
    params += [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=defaults[key], annotation=Any)
               for key in settings.model_fields]
    return inspect.Signature(params)


def component_factory(name: str, settings: Type[S], **meta: Any) -> Callable[[Callable[[Language, str, S], T]],
                                                                              Callable[..., T]]:
    """Register ``make(nlp, name, settings)`` as the spaCy factory ``name``: its ``default_config`` is
    ``settings.defaults()`` (``meta["default_config"]`` may add a registered function's ``@`` key to a sub-block),
    and ``make`` gets the component's values checked as ``[components.NAME]``. Returns the registered factory,
    which the ``spacy_factories`` entry points name."""

    def register(make: Callable[[Language, str, S], T]) -> Callable[..., T]:
        def factory(nlp: Language, name: str, **values: Any) -> T:
            return make(nlp, name, settings.load(f"components.{name}", values))

        factory.__signature__ = settings_signature(settings, "nlp", "name")  # type: ignore[attr-defined]
        factory.__name__ = factory.__qualname__ = make.__name__
        factory.__module__, factory.__doc__ = make.__module__, make.__doc__
        default_config = meta.pop("default_config", settings.defaults())
        Language.factory(name, default_config=default_config, func=factory, **meta)
        return factory

    return register


def settings_block(settings: Type[Settings], doc: str) -> Callable[..., Dict[str, Any]]:
    """A registered function (``@misc``) for a sub-block whose keys are ``settings``' fields. It hands the values
    on unchecked: the component holding the block checks them as its own setting, so that an error names the
    block where it stands (``[components.esco_skill_ranker.encoder] backend …``), which a function called
    before the component cannot know."""

    def block(**values: Any) -> Dict[str, Any]:
        return values

    block.__signature__ = settings_signature(settings)  # type: ignore[attr-defined]
    block.__doc__ = doc
    return block
