"""Training configs: one pipeline config from the factories, one base, overlays that hold only what differs;
every mistake is a ConfigError that names the file or the key, and only config mistakes are."""

import inspect
from pathlib import Path

import pytest
import spacy
from spacy.language import Language
from spacy.util import registry
from thinc.api import Config

from pipeline.components.assembly import base_config
from pipeline.components.pipes import ALL_PIPES, BOILERPLATE, MATCHER, RANKER
from pipeline.errors import ConfigError
from pipeline.training.config import read_config, read_file, resolve_training
from pipeline.training.negatives import MixtureNegatives, NegativeSampler, RandomNegatives, TaxonomyNegatives
from pipeline.training.settings import TrainingSettings
from pipeline.training.supervision import AltLabelPairs, CorpusPairs

from conftest import ROOT

CONFIGS = ROOT / "configs"
OVERLAYS = ("in_batch", "random", "taxonomy", "hard", "mixture")


def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


# ------------------------------------------------------------------ the pipeline config
def test_pipeline_config_is_the_factories_config():
    config = base_config()
    assert config["nlp"]["pipeline"] == list(ALL_PIPES)
    assert config["nlp"]["tokenizer"]["@tokenizers"] == "esco.job_ad_tokenizer.v1"
    ranker_defaults = Language.get_factory_meta(RANKER).default_config
    assert all(config["components"][RANKER][key] == value for key, value in ranker_defaults.items()
               if not isinstance(value, dict))
    assert config["components"][RANKER]["encoder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert config["initialize"]["components"] == {MATCHER: {"esco_path": "${paths.esco}"},
                                                  RANKER: {"esco_path": "${paths.esco}"},
                                                  BOILERPLATE: {"boilerplate_path": "${paths.boilerplate}"}}
    assert "training" not in config  # spaCy's own [training] defaults would clash with the project's section
    nlp = spacy.util.load_model_from_config(base_config(), auto_fill=True, validate=True)  # no initialize needed
    assert nlp.pipe_names == list(ALL_PIPES)


def test_pipeline_config_without_ranker_and_with_another_encoder():
    assert RANKER not in base_config(with_ranker=False)["components"]
    assert RANKER not in base_config(with_ranker=False)["initialize"]["components"]
    assert base_config(encoder="some/folder")["components"][RANKER]["encoder"]["name"] == "some/folder"


# ------------------------------------------------------------------ only what differs
def registered_defaults(block: dict) -> dict:
    """The defaults of the registered function a config block names (``@negative_samplers = "..."``)."""
    kind = next(key for key in block if key.startswith("@"))
    func = getattr(registry, kind[1:]).get(block[kind])
    return {name: param.default for name, param in inspect.signature(func).parameters.items()
            if param.default is not inspect.Parameter.empty}


def restated(section: dict, defaults: dict, where: str) -> list:
    """The keys of a config layer that say what the default says already."""
    found = []
    for key, value in section.items():
        if isinstance(value, dict):
            named = any(k.startswith("@") for k in value)
            found += restated(value, registered_defaults(value) if named else defaults.get(key, {}), f"{where}.{key}")
        elif key in defaults and value == defaults[key]:
            found.append(f"{where}.{key} = {value!r}")
    return found


def layer_defaults(path: Path, defaults: dict) -> dict:
    """What a config layer's keys are said against: the defaults, then the layers it extends (a layer may set a
    key back to the factory default that its parent changed: late_interaction.cfg's skill_text)."""
    parent = read_file(path).get("extends", {}).get("config")
    return Config(defaults).merge(read_config(path.parent / parent)) if parent else defaults


def test_shipped_configs_hold_only_what_differs_from_the_defaults():
    defaults = {**base_config(), "training": TrainingSettings.defaults()}
    for path in sorted(CONFIGS.glob("*.cfg")):
        assert restated(read_file(path), layer_defaults(path, defaults), path.name) == []
    assert restated({"training": {"patience": 2, "negatives": {"@negative_samplers": "esco.hard_negatives.v1",
                                                                "refresh_every": 50}}}, defaults, "x") == \
           ["x.training.patience = 2", "x.training.negatives.refresh_every = 50"]  # the check can fail


# ------------------------------------------------------------------ layering
def test_every_overlay_extends_the_base_and_differs_only_in_its_negatives():
    base = read_config(CONFIGS / "in_batch.cfg")
    for name in OVERLAYS:
        text = (CONFIGS / f"{name}.cfg").read_text()
        assert '[extends]\nconfig = "base.cfg"' in text and "[nlp]" not in text and "[training.supervision" not in text
        config = read_config(CONFIGS / f"{name}.cfg")
        assert "extends" not in config
        assert {k: v for k, v in config["training"].items() if k != "negatives"} == \
               {k: v for k, v in base["training"].items() if k != "negatives"}
        assert config["nlp"] == base["nlp"] and config["components"] == base["components"]


def test_base_is_not_a_recipe():
    with pytest.raises(ConfigError, match=r"\[training.negatives\] is missing"):
        resolve_training(read_config(CONFIGS / "base.cfg"))


def test_default_is_the_implied_skills_recipe_on_the_mixture_trained_longer_ranking_every_label_weighted():
    default, implied = read_config(CONFIGS / "default.cfg"), read_config(CONFIGS / "implied.cfg")
    longer = {"max_steps", "eval_every"}
    assert {k: v for k, v in default["training"].items() if k not in longer} == \
           {k: v for k, v in implied["training"].items() if k not in longer}
    assert default["training"]["max_steps"] == 3 * implied["training"]["max_steps"]
    ranker, implied_ranker = default["components"][RANKER], implied["components"][RANKER]
    assert ranker["skill_text"] == "preferred+alt" and implied_ranker["skill_text"] == "preferred"
    assert ranker["preferred_weight"] == 0.25 and implied_ranker["preferred_weight"] == 0.0
    assert {**ranker, "skill_text": "preferred", "preferred_weight": 0.0} == implied_ranker
    assert {k: v for k, v in default.items() if k not in ("training", "components")} == \
           {k: v for k, v in implied.items() if k not in ("training", "components")}
    assert {k: v for k, v in default["components"].items() if k != RANKER} == \
           {k: v for k, v in implied["components"].items() if k != RANKER}
    settings, sampler, sources = resolve_training(default)
    assert isinstance(sampler, MixtureNegatives)
    assert settings.selection == "combined" and settings.dev_signals and 1.0 in settings.interpolation
    assert set(sources) == {"corpus", "alt_labels", "descriptions"} and settings.mask_probability > 0


def test_an_overlays_negatives_replace_its_bases_block(tmp_path):
    overlay = write(tmp_path / "mine.cfg", f"""
[extends]
config = "{CONFIGS / 'random.cfg'}"

[training]
max_steps = 7

[training.negatives]
@negative_samplers = "esco.mixture_negatives.v1"

[training.negatives.samplers]

[training.negatives.samplers.taxonomy]
@negative_samplers = "esco.taxonomy_negatives.v1"
num_negatives = 2
""")
    config = read_config(overlay)  # a chain: base.cfg ← random.cfg ← mine.cfg
    negatives = config["training"]["negatives"]
    assert "num_negatives" not in negatives  # random's argument did not leak into the mixture
    assert negatives["@negative_samplers"] == "esco.mixture_negatives.v1"
    assert config["training"]["max_steps"] == 7 and config["training"]["batch_size"] == 32  # the rest merges
    settings, sampler, sources = resolve_training(config)
    assert isinstance(sampler, MixtureNegatives) and isinstance(sampler.samplers["taxonomy"], TaxonomyNegatives)
    assert set(sources) == {"corpus", "alt_labels"}


def test_same_sampler_in_an_overlay_merges_its_arguments(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "mid.cfg", f'[extends]\nconfig = "{CONFIGS / "random.cfg"}"')
    overlay = write(tmp_path / "sub" / "more.cfg", """
[extends]
config = "../mid.cfg"

[training]

[training.negatives]
num_negatives = 3
""")  # [extends] is relative to the folder of the config that names it
    sampler = resolve_training(read_config(overlay))[1]
    assert isinstance(sampler, RandomNegatives) and sampler.num_negatives == 3


def test_a_config_without_extends_is_complete_over_the_pipeline(tmp_path):
    full = write(tmp_path / "full.cfg", """
[training]
max_steps = 3

[training.negatives]
@negative_samplers = "esco.random_negatives.v1"

[training.supervision]

[training.supervision.alt]
@supervision_sources = "esco.alt_label_pairs.v1"
""")
    config = read_config(full)
    assert config["nlp"]["pipeline"] == list(ALL_PIPES)  # the pipeline still comes from the factories
    settings, sampler, sources = resolve_training(config)
    assert settings.max_steps == 3 and isinstance(sources["alt"], AltLabelPairs)


@pytest.mark.parametrize(
    "text,match",
    [
        ('[extends]\nconfig = "nowhere.cfg"', r"bad\.cfg.*nowhere\.cfg"),
        ('[extends]\npath = "base.cfg"', r"bad\.cfg.*\[extends\]"),
        ("[extends\nconfig = 1", r"bad\.cfg"),
    ],
)
def test_a_bad_config_file_names_the_file(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        read_config(write(tmp_path / "bad.cfg", text))


def test_extends_cycles_are_refused(tmp_path):
    write(tmp_path / "a.cfg", '[extends]\nconfig = "b.cfg"')
    write(tmp_path / "b.cfg", '[extends]\nconfig = "a.cfg"')
    with pytest.raises(ConfigError, match="cycle"):
        read_config(tmp_path / "a.cfg")


# ------------------------------------------------------------------ --set overrides and values
@pytest.mark.parametrize(
    "override,key",
    [
        ("training.batch_size=1", "batch_size"),
        ("training.learning_rate=true", "learning_rate"),
        ('training.device="tpu"', "device"),
        ("training.negatives.num_negatives=-2", "num_negatives"),
        ('training.negatives.num_negatives="many"', "num_negatives"),
        ('training.supervision.corpus.split="test"', "split"),
        ("training.supervision.alt_labels.per_skill=0", "per_skill"),
        ("training.supervision.corpus.max_pairs=true", "max_pairs"),
        ("nosuchsection.key=1", "nosuchsection"),
        ("max_steps=3", "max_steps=3"),
    ],
)
def test_bad_set_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        resolve_training(read_config(CONFIGS / "random.cfg", [override]))


@pytest.mark.parametrize(
    "make,key",
    [
        (lambda: TaxonomyNegatives(4, max_levels=-1), "max_levels"),
        (lambda: RandomNegatives(True), "num_negatives"),
        (lambda: AltLabelPairs(per_skill=True), "per_skill"),
        (lambda: CorpusPairs(split="test"), "split"),
    ],
)
def test_constrained_hints_are_enforced(make, key):
    with pytest.raises(ConfigError, match=key):
        make()


def test_an_unknown_sampler_is_a_config_error(tmp_path):
    overlay = write(tmp_path / "typo.cfg", f"""
[extends]
config = "{CONFIGS / 'base.cfg'}"

[training]

[training.negatives]
@negative_samplers = "esco.hardest_negatives.v1"
""")
    with pytest.raises(ConfigError, match=r"\[training.negatives\].*hardest"):
        resolve_training(read_config(overlay))


class Broken(NegativeSampler):
    pass


@registry.negative_samplers("test.broken_negatives.v1")
def create_broken_negatives(num_negatives: int = 1) -> NegativeSampler:
    return Broken() if num_negatives else {}["a bug, not a config mistake"]


def test_a_bug_in_a_registered_function_is_not_a_config_error(tmp_path):
    overlay = write(tmp_path / "broken.cfg", f"""
[extends]
config = "{CONFIGS / 'base.cfg'}"

[training]

[training.negatives]
@negative_samplers = "test.broken_negatives.v1"
num_negatives = 0
""")
    with pytest.raises(KeyError):  # keeps its type and traceback instead of becoming a one-line ConfigError
        resolve_training(read_config(overlay))
