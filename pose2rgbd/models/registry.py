"""The model registry: model kind -> :class:`ModelFamily` (config schema, builder, presets, data, engine, recipe).

Checkpoints record the kind; :func:`pose2rgbd.models.checkpoint.load_checkpoint`, the training driver
(:func:`pose2rgbd.training.train.train`), the engines and the CLI find the family here. Built-in kinds are one
line each in :data:`_BUILTIN` (kind -> module exporting ``FAMILY``), imported on first use, so this package never
imports ``pose2rgbd.methods`` statically (methods sit above models). Tests and plugins add kinds with
:func:`register_family` (and remove them with :func:`unregister_family`). The analytic stand-ins that tests and
benchmarks of the serving path use in place of a trained model are no model kinds: they sit in :data:`_STAND_INS`,
resolved by name like a built-in kind (so their saved checkpoints load in any process: a node, a benchmark) but
listed by neither :func:`family_names` nor anything built on it.

A model class of a family declares ``kind`` (a class attribute equal to the family's kind) and keeps its config
dataclass as ``self.config``; that is how :func:`~pose2rgbd.models.checkpoint.save_checkpoint` knows what it saves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from pose2rgbd.errors import ConfigError

DATA_KINDS: tuple[str, ...] = ("pose_to_image", "image_to_pose", "sequences")
ENGINE_KINDS: tuple[str, ...] = ("render", "localize")

# kind -> module that exports FAMILY (imported lazily, on first lookup): the model kinds
_BUILTIN: dict[str, str] = {
    "pose2rgbd": "pose2rgbd.methods.pose2rgbd",
    "posegan": "pose2rgbd.methods.posegan",
    "selfsup-depth": "pose2rgbd.methods.selfsup_depth",
    "hybrid": "pose2rgbd.methods.hybrid",
}

# the same for the stand-ins of tests and benchmarks of the serving path (no trained weights, no recipe):
# resolvable by name, listed nowhere
_STAND_INS: dict[str, str] = {
    "ground-plane": "pose2rgbd.testing.ground_plane",  # analytic ground-plane renderer
    "toy-localizer": "pose2rgbd.testing.toy_localizer",  # seeded random image -> pose network
}

_REGISTRY: dict[str, ModelFamily] = {}

# ``recipe(ctx: pose2rgbd.training.recipe.RecipeContext) -> TrainingSetup`` (training sits above this layer, so the
# types are named here, not imported)
Recipe = Callable[..., Any]
# ``policy(config, dataset, given) -> (config, note)``
DatasetPolicy = Callable[[Any, Any, dict[str, Any]], tuple[Any, str]]


@dataclass
class ModelFamily:
    """Everything the generic pipeline needs to know about one model kind.

    Attributes:
        kind: the name written into checkpoints (``model_kind``) and given to ``pose2rgbd train --method``.
        config_cls: the config dataclass (its fields are the ``model.*`` settings).
        build: ``build(config) -> ModelBase`` (a fresh, untrained model whose ``config`` is ``config``).
        presets: preset name -> config field overrides; ``default_preset`` is used when none is named.
        data: what it trains on: ``pose_to_image`` | ``image_to_pose`` | ``sequences`` (datasets declare which
            they can give: :meth:`pose2rgbd.dataset.Dataset.capabilities`).
        engine: the engine that serves it: ``render`` | ``localize`` | ``None`` (not servable).
        train: the training recipe's loader: a function that imports the recipe when training starts and returns it
            (e.g. ``def _recipe(): from .recipe import prepare; return prepare``), so a family's module does not
            import the trainer; see :func:`pose2rgbd.training.train.train`.
        description: one line for ``--help`` and listings.
        upgrade_v1: converts a version-1 checkpoint dict of this kind to version 2 (``None``: v1 never existed).
        migrate: brings a checkpoint dict of this kind (any readable version, after ``upgrade_v1``) to the
            current layout of its config sections, e.g. a setting that moved from ``train_config`` into
            ``model_config`` (``None``: nothing to migrate). It must leave a current checkpoint unchanged.
        fit_dataset: the loader of the method's policy for a dataset its default settings do not suit (as
            ``train``), the policy called as ``function(config, dataset, given) -> (config, note)`` before training
            (``dataset``: its path, opened by the policy if it needs it; ``given``: the ``model.*`` settings the
            user chose; raise :class:`~pose2rgbd.errors.ConfigError` to refuse, return a ``note`` to say what
            changed); see :meth:`fit_to_dataset`.
        train_defaults: ``train.*`` values this kind trains with where the user sets none (e.g. its learning rate):
            ``pose2rgbd train --method KIND`` takes them as the base that ``--config``, flags and ``--set`` override,
            and ``--help`` shows them. A :class:`~pose2rgbd.training.config.TrainConfig` built in Python keeps the
            class defaults.
    """

    kind: str
    config_cls: type
    build: Callable[[Any], Any]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_preset: str | None = None
    data: str = "pose_to_image"
    engine: str | None = None
    train: Callable[[], Recipe] | None = None
    description: str = ""
    upgrade_v1: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    migrate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    fit_dataset: Callable[[], DatasetPolicy] | None = None
    train_defaults: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind or not self.kind.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"model family kind {self.kind!r}: use letters, digits, '-' and '_'")
        if self.data not in DATA_KINDS:
            raise ConfigError(f"model family {self.kind!r}: data {self.data!r} is not one of {list(DATA_KINDS)}")
        if self.engine is not None and self.engine not in ENGINE_KINDS:
            raise ConfigError(
                f"model family {self.kind!r}: engine {self.engine!r} is not one of {list(ENGINE_KINDS)} or None"
            )
        if self.default_preset is not None and self.default_preset not in self.presets:
            raise ConfigError(f"model family {self.kind!r}: default preset {self.default_preset!r} is not a preset")
        for name in ("train", "fit_dataset"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(
                    f"model family {self.kind!r}: {name} must be a function returning the {name} function, "
                    f"got {type(value).__name__}"
                )

    # -- configs -------------------------------------------------------------------------------------------
    def make_config(self, preset: str | None = None, **overrides: Any) -> Any:
        """A config of this family: ``preset`` (default: ``default_preset``) with some fields overridden."""
        name = preset if preset is not None else self.default_preset
        kw: dict[str, Any] = {}
        if name is not None:
            if name not in self.presets:
                raise ConfigError(f"unknown {self.kind} preset {name!r}; choose one of {list(self.presets)}")
            kw.update(self.presets[name])
        kw.update(overrides)
        names = {f.name for f in fields(self.config_cls)}
        unknown = sorted(set(kw) - names)
        if unknown:
            raise ConfigError(f"{self.kind} model config has no field(s) {unknown}; fields: {sorted(names)}")
        return self.config_cls(**kw)

    # -- training ------------------------------------------------------------------------------------------
    def load_recipe(self) -> Recipe:
        """The training recipe function (:attr:`train` imports it)."""
        if self.train is None:
            raise ConfigError(f"model kind {self.kind!r} has no training recipe")
        try:
            return self.train()
        except ImportError as e:
            raise ConfigError(f"model kind {self.kind!r}: cannot import its training recipe: {e}") from e

    def fit_to_dataset(self, config: Any, dataset: Any, given: dict[str, Any]) -> tuple[Any, str]:
        """``(config, note)``: the method's :attr:`fit_dataset` policy applied (unchanged and no note without one)."""
        if self.fit_dataset is None:
            return config, ""
        return self.fit_dataset()(config, dataset, given)


def register_family(family: ModelFamily, *, replace_existing: bool = False) -> ModelFamily:
    """Add a model kind (tests, plugins). Registering a kind twice raises unless ``replace_existing``."""
    taken = family.kind in _REGISTRY or family.kind in _BUILTIN or family.kind in _STAND_INS
    if taken and not replace_existing and _REGISTRY.get(family.kind) is not family:
        raise ConfigError(f"model kind {family.kind!r} is already registered; pick another kind name")
    _REGISTRY[family.kind] = family
    return family


def unregister_family(kind: str) -> None:
    """Remove a kind added with :func:`register_family` (tests clean up with this)."""
    _REGISTRY.pop(kind, None)


def family_names() -> list[str]:
    """Every known kind: the built-in ones and the registered ones, sorted (the stand-ins are not model kinds)."""
    return sorted((set(_BUILTIN) | set(_REGISTRY)) - set(_STAND_INS))


def get_family(kind: str) -> ModelFamily:
    """The family of ``kind`` (imports a built-in family on first use); unknown kinds raise ConfigError."""
    fam = _REGISTRY.get(kind)
    if fam is not None:
        return fam
    module = _BUILTIN.get(kind) or _STAND_INS.get(kind)
    if module is None:
        from pose2rgbd.config import closest

        known = family_names()
        near = closest(kind.lower(), known, n=1) if isinstance(kind, str) else []
        mean = f"did you mean {near[0]!r}? Known" if near else "known"
        raise ConfigError(f"unknown model kind {kind!r}; {mean} kinds: {', '.join(known)}")
    fam = importlib.import_module(module).FAMILY
    if not isinstance(fam, ModelFamily) or fam.kind != kind:
        raise ConfigError(f"{module}.FAMILY is not the ModelFamily of kind {kind!r}")
    _REGISTRY[kind] = fam
    return fam


def family_of_config(config: Any) -> ModelFamily:
    """The family whose config class ``config`` is an instance of (built-in families are imported)."""
    for kind in [*family_names(), *_STAND_INS]:
        fam = get_family(kind)
        if type(config) is fam.config_cls:
            return fam
    raise ConfigError(
        f"{type(config).__name__} is the config of no registered model kind ({', '.join(family_names())})"
    )


def model_identity(model: Any) -> tuple[ModelFamily, Any]:
    """``(family, config)`` of a model instance: its class attribute ``kind`` and its ``config`` attribute."""
    kind = getattr(type(model), "kind", None)
    if not isinstance(kind, str):
        raise ConfigError(f"{type(model).__name__} declares no model kind (a class attribute `kind = '...'`)")
    fam = get_family(kind)
    config = model.__dict__.get("config")
    if not isinstance(config, fam.config_cls):
        raise ConfigError(
            f"{type(model).__name__}.config is {type(config).__name__}, expected {fam.config_cls.__name__} "
            f"(the config of model kind {kind!r})"
        )
    return fam, config
