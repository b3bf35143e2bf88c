"""Reading training configs: the pipeline ⊕ the base ⊕ the strategy overlay ⊕ ``--set`` overrides.

A training config is layered so that each setting is written once:

- the pipeline (``[nlp]``, ``[components]``, ``[initialize]``) comes from ``assembly.base_config``, i.e. from the
  component factories themselves, and ``[training]`` from ``TrainingSettings``' defaults;
- ``configs/base.cfg`` holds what every recipe shares and the defaults do not say (``[training.supervision]``);
- an overlay (``configs/random.cfg`` …) holds what differs, mainly ``[training.negatives]``, and names its base::

      [extends]
      config = "base.cfg"    # relative to the overlay; bases may extend bases

  ``[extends]`` is removed once merged. A config without it is a full config on its own (still merged over the
  pipeline). Merging is confection's ``Config.merge``: keys are merged section by section, and a block whose
  ``@`` function differs replaces the base's block whole, so an overlay's ``[training.negatives]`` never
  inherits the base sampler's arguments.
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from catalogue import RegistryError
from confection import ConfigValidationError
from spacy.util import registry
from thinc.api import Config

import pipeline.training.negatives as _negatives  # noqa: F401 - registers the samplers
import pipeline.training.supervision as _supervision  # noqa: F401 - registers the sources
from pipeline.components.assembly import PIPELINE_SECTIONS, base_config
from pipeline.errors import ConfigError
from pipeline.training.negatives import NegativeSampler
from pipeline.training.settings import SECTION, SUBSECTIONS, TrainingSettings
from pipeline.training.supervision import PairSource

EXTENDS = "extends"
# What confection and catalogue raise for a bad file, key, value or function name. Anything else is a bug and
# keeps its own type and traceback.
CONFIG_ERRORS = (ConfigValidationError, RegistryError, configparser.Error)


def read_config(path: Path, overrides: Sequence[str] = ()) -> Config:
    """The full training config: pipeline and ``[training]`` defaults ⊕ the ``[extends]`` chain of ``path`` ⊕
    ``--set section.key=value`` overrides (values parsed as JSON when they parse, else taken as strings).
    Variables stay uninterpolated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config '{path}' not found")
    config = base_config(with_ranker=True).merge({SECTION: TrainingSettings.defaults()})
    for layer in read_layers(path):
        config = config.merge(layer)
    return apply_overrides(config, parse_overrides(overrides))


def read_layers(path: Path, chain: Tuple[Path, ...] = ()) -> List[Config]:
    """The configs of ``path``'s ``[extends]`` chain, base first, each without its ``[extends]`` section."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " → ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"[{EXTENDS}] configs extend each other in a cycle: {cycle}")
    layer = read_file(path)
    extends = layer.pop(EXTENDS, None)
    if extends is None:
        return [layer]
    return read_layers(extended_path(path, extends), (*chain, resolved)) + [layer]


def read_file(path: Path) -> Config:
    try:
        return Config().from_disk(path, interpolate=False)
    except CONFIG_ERRORS as err:
        raise ConfigError(f"cannot read training config '{path}': {err}") from err


def extended_path(path: Path, extends: Any) -> Path:
    """The file ``[extends] config`` names, relative to the config that names it."""
    if not isinstance(extends, dict) or set(extends) != {"config"} or not isinstance(extends["config"], str):
        raise ConfigError(f"{path}: [{EXTENDS}] must hold exactly one key, config = \"<path to the base config>\", "
                          f"got {dict(extends) if isinstance(extends, dict) else extends!r}")
    base = path.parent / extends["config"]
    if not base.is_file():
        raise ConfigError(f"{path}: [{EXTENDS}] config = \"{extends['config']}\" names no file (looked for {base})")
    return base


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
    parsed: Dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key.strip():
            raise ConfigError(f"override '{item}' must look like section.key=value")
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    return parsed


def overrides_by_section(overrides: Dict[str, Any], command: str, sections: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """The parsed ``--set`` items of a command that reads only ``sections``: {section: {key: value}} (the key is the
    part after the last dot); an item of any other section is an error naming the sections the command reads."""
    found: Dict[str, Dict[str, Any]] = {section: {} for section in sections}
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if section not in found:
            raise ConfigError(f"--set {key}: {command} reads {' and '.join(f'[{s}]' for s in sections)} keys only")
        found[section][name] = value
    return found


def apply_overrides(config: Config, overrides: Dict[str, Any]) -> Config:
    """``config`` with ``overrides`` applied by confection (which refuses keys under a missing section)."""
    if not overrides:
        return config
    try:
        return Config().from_str(config.to_str(), overrides=overrides, interpolate=False)
    except CONFIG_ERRORS as err:
        raise ConfigError(f"--set {', '.join(overrides)}: {err}") from err


def resolve_training(config: Config) -> Tuple[TrainingSettings, NegativeSampler, Dict[str, PairSource]]:
    """The loop settings, the negative sampler and the positive sources a config names, all checked."""
    if "training" not in config:
        raise ConfigError("the config has no [training] section")
    try:
        section = config.interpolate()["training"]
    except CONFIG_ERRORS as err:
        raise ConfigError(f"the config's ${{…}} variables cannot be filled in: {err}") from err
    for key in SUBSECTIONS:
        if key not in section:
            raise ConfigError(f"[training.{key}] is missing: give one in the config or in the config it extends")
    settings = TrainingSettings.from_section(section)
    sampler = resolve_block(section, "negatives")
    if not isinstance(sampler, NegativeSampler):
        raise ConfigError(f"[training.negatives] must name a registered negative sampler, got {sampler!r}")
    sources = resolve_block(section, "supervision")
    return settings, sampler, dict(sources)


def resolve_block(section: Dict[str, Any], key: str) -> Any:
    """Resolve ``[training.<key>]`` through the registries; config mistakes become ConfigErrors naming it.

    The registered functions' own ConfigErrors already name their key and pass through unchanged.
    """
    try:
        return registry.resolve({key: section[key]})[key]
    except CONFIG_ERRORS as err:
        raise ConfigError(f"[training.{key}] could not be resolved: {err}") from err


def pipeline_config(config: Config) -> Config:
    """The parts of a training config that describe the pipeline itself (what gets saved with it)."""
    return Config({key: config[key] for key in PIPELINE_SECTIONS if key in config})


def config_seed(config: Config) -> int:
    return int(config.get("system", {}).get("seed", 0))
