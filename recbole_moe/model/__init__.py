"""Model registry: a model is found by its module, in recbole-moe's model package, then in the
model packages other installed packages register, then in RecBole.

As in RecBole, model ``Name`` lives in module ``<package>.<name in lower case>`` of a model
package. A package registers its model package with an entry point in the group
``recbole_moe.models``, e.g. in its ``setup.cfg``::

    [options.entry_points]
    recbole_moe.models =
        my_models = my_project.models

Its property file ``Name.yaml`` (defaults of the model's settings, as RecBole's) sits next to
the module (recbole-moe's own models keep theirs in ``recbole_moe/properties/model/``). What a
model can do and accepts is declared on its class (:mod:`recbole_moe.model.declaration`).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
import pkgutil
import sys
from functools import cache, lru_cache
from importlib.metadata import entry_points

import recbole.model
from recbole.model.abstract_recommender import AbstractRecommender

from recbole_moe.errors import MissingPackageError, UnknownModelError
from recbole_moe.model.declaration import Declaration

#: recbole-moe's own model package.
OWN_MODEL_PACKAGE = __name__
#: Entry-point group under which other packages register their model packages.
ENTRY_POINT_GROUP = "recbole_moe.models"
#: Modules of a model package that hold no model.
_NOT_MODELS = ("base", "declaration", "sequence")

#: RecBole's model families, as its ``recbole.model`` subpackages (``get_model`` order).
_RECBOLE_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)

#: RecBole models that import a package RecBole does not install: ``(module, pip install
#: argument)`` for each, checked in order. ``recbole/model/exlib_recommender/__init__.py``
#: imports both LightGBM and XGBoost, so each needs both packages. (KGIN and MCCLK import
#: ``torch_scatter``; ``compat`` provides the functions they use when it is missing.)
OPTIONAL_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "LightGBM": (("lightgbm", "lightgbm"), ("xgboost", "xgboost")),
    "XGBoost": (("xgboost", "xgboost"), ("lightgbm", "lightgbm")),
    "KGAT": (("dgl", "dgl"),),
    "NCL": (("faiss", "faiss-cpu"),),
}


def _is_model(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, AbstractRecommender)


def model_packages() -> list[str]:
    """recbole-moe's model package, then every registered one (entry points, by name)."""
    return [OWN_MODEL_PACKAGE, *_registered_packages(tuple(sys.path))]


@lru_cache(maxsize=4)
def _registered_packages(search_path: tuple[str, ...]) -> tuple[str, ...]:
    """The model packages registered by the distributions on ``search_path`` (``sys.path``:
    looked up again when it changes)."""
    registered = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    return tuple(ep.value for ep in registered)


def _package_models(package: str) -> list[str]:
    """Names of the models in ``package``: each module's class named as the module."""
    names = []
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.startswith("_") or info.name in _NOT_MODELS:
            continue
        found = importlib.import_module(f"{package}.{info.name}")
        names += [
            name
            for name, obj in vars(found).items()
            if name.lower() == info.name and _is_model(obj)
        ]
    return names


@cache
def recbole_model_modules() -> dict[str, str]:
    """Every model RecBole ships, mapped to the module that defines it.

    Read from the ``from ... import Model`` lines of each family's ``__init__.py``, without
    importing it: ``exlib_recommender`` imports lightgbm and xgboost at once.
    """
    root = os.path.dirname(recbole.model.__file__)
    modules = {}
    for sub in _RECBOLE_SUBMODULES:
        with open(os.path.join(root, sub, "__init__.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                module = f"recbole.model.{sub}.{node.module}" if node.level else node.module
                modules.update((alias.name, module) for alias in node.names)
    return dict(sorted(modules.items()))


def recbole_model_families() -> dict[str, str]:
    """Every model RecBole ships, mapped to its family (``general_recommender``, ...)."""
    return {name: module.split(".")[2] for name, module in recbole_model_modules().items()}


def recbole_models() -> tuple[str, ...]:
    """Names of the models RecBole 1.2.1 ships."""
    return tuple(recbole_model_modules())


def missing_package(name: str) -> tuple[str, str] | None:
    """``(module, pip install argument)`` of the first optional package model ``name`` needs
    and lacks; None when it has them all."""
    for package in OPTIONAL_PACKAGES.get(name, ()):
        if importlib.util.find_spec(package[0]) is None:
            return package
    return None


def plugin_models() -> list[str]:
    """recbole-moe's models, then those of the registered model packages."""
    return [name for package in model_packages() for name in _package_models(package)]


def available_models() -> list[str]:
    """Our models (and registered ones) followed by RecBole's."""
    ours = plugin_models()
    return ours + [m for m in recbole_models() if m not in ours]


def _find(package: str, name: str) -> type | None:
    module_path = f"{package}.{name.lower()}"
    try:
        if importlib.util.find_spec(module_path) is None:
            return None
    except ModuleNotFoundError:  # the package itself is missing
        return None
    found = getattr(importlib.import_module(module_path), name, None)
    return found if _is_model(found) else None


def get_model(name: str) -> type:
    """Return the model class called ``name``: module ``name.lower()`` of our model package,
    then of each registered model package, then of RecBole's.

    Raises:
        UnknownModelError: listing the available models and the closest match.
        MissingPackageError: for a RecBole model whose optional package is not installed.
    """
    for package in model_packages():
        found = _find(package, name)
        if found is not None:
            return found
    missing = missing_package(name)
    if missing:
        raise MissingPackageError(
            f"RecBole's {name} needs the package '{missing[0]}', which is not installed: "
            f"pip install {missing[1]}"
        )
    module = recbole_model_modules().get(name)
    if module:
        return getattr(importlib.import_module(module), name)
    ours = plugin_models()
    known = ours + [m for m in recbole_models() if m not in ours]
    lowered = {k.lower(): k for k in known}  # the same name in other letter case first
    close = [lowered[name.lower()]] if name.lower() in lowered else []
    close = close or difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownModelError(
        f"Unknown model '{name}'.{hint} Available models: recbole-moe: "
        f"{', '.join(ours)}; RecBole: {', '.join(recbole_models())}."
    )


def declared(model: str | type) -> Declaration:
    """What ``model`` (a name or class) declares (:mod:`recbole_moe.model.declaration`);
    RecBole's classes that train at every position are listed in
    :data:`recbole_moe.model.sequence.RECBOLE_SEQUENCE_MODELS`."""
    from recbole_moe.model.sequence import RECBOLE_SEQUENCE_MODELS

    model_class = get_model(model) if isinstance(model, str) else model
    return Declaration.of(model_class, model_class in RECBOLE_SEQUENCE_MODELS)


def sequence_models() -> list[str]:
    """Every available model that can train under ``train_objective: sequence``."""
    from recbole_moe.model.sequence import RECBOLE_SEQUENCE_MODELS

    ours = [name for name in plugin_models() if declared(name).sequence_trainable]
    return ours + [cls.__name__ for cls in RECBOLE_SEQUENCE_MODELS]


def proposed_models(models: list[str]) -> list[str]:
    """Those of ``models`` that declare ``proposed`` (unknown names are left out)."""
    chosen = []
    for name in models:
        try:
            if declared(name).proposed:
                chosen.append(name)
        except UnknownModelError:
            continue
    return chosen


__all__ = [
    "ENTRY_POINT_GROUP",
    "available_models",
    "declared",
    "get_model",
    "model_packages",
    "plugin_models",
    "proposed_models",
    "recbole_models",
    "sequence_models",
]
