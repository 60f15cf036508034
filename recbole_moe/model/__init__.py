"""Model registry: recbole-moe's models first, then every model RecBole ships."""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
from functools import cache

import recbole.model

from recbole_moe.errors import MissingPackageError, UnknownModelError

#: Our models, resolved lazily so that importing the registry stays cheap.
MODEL_MODULES: dict[str, str] = {
    "HyMoERec": "recbole_moe.model.hymoerec",
    "FAME": "recbole_moe.model.fame",
    "Mamba4Rec": "recbole_moe.model.mamba4rec",
}

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


def available_models() -> list[str]:
    """Our models followed by RecBole's."""
    return list(MODEL_MODULES) + [m for m in recbole_models() if m not in MODEL_MODULES]


def get_model(name: str) -> type:
    """Return the model class called ``name``; our registry wins over RecBole's.

    Raises:
        UnknownModelError: listing the available models and the closest match.
        MissingPackageError: for a RecBole model whose optional package is not installed.
    """
    if name in MODEL_MODULES:
        return getattr(importlib.import_module(MODEL_MODULES[name]), name)
    missing = missing_package(name)
    if missing:
        raise MissingPackageError(
            f"RecBole's {name} needs the package '{missing[0]}', which is not installed: "
            f"pip install {missing[1]}"
        )
    module = recbole_model_modules().get(name)
    if module:
        return getattr(importlib.import_module(module), name)
    known = available_models()
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownModelError(
        f"Unknown model '{name}'.{hint} Available models: recbole-moe: "
        f"{', '.join(MODEL_MODULES)}; RecBole: {', '.join(recbole_models())}."
    )
