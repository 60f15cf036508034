"""Model registry: recbole-moe's models first, then every model RecBole ships."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from functools import cache

from recbole.model.abstract_recommender import AbstractRecommender

from recbole_moe.errors import UnknownModelError

#: Our models, resolved lazily so that importing the registry stays cheap.
MODEL_MODULES: dict[str, str] = {
    "HyMoERec": "recbole_moe.model.hymoerec",
    "FAME": "recbole_moe.model.fame",
    "Mamba4Rec": "recbole_moe.model.mamba4rec",
}

_RECBOLE_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
)


@cache
def recbole_models() -> tuple[str, ...]:
    """Names of the models RecBole 1.2.1 ships (the ones importable here)."""
    names = set()
    for sub in _RECBOLE_SUBMODULES:
        module = importlib.import_module(f"recbole.model.{sub}")
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, AbstractRecommender):
                if obj.__module__.startswith(f"recbole.model.{sub}."):
                    names.add(name)
    return tuple(sorted(names))


def available_models() -> list[str]:
    """Our models followed by RecBole's."""
    return list(MODEL_MODULES) + [m for m in recbole_models() if m not in MODEL_MODULES]


def get_model(name: str) -> type:
    """Return the model class called ``name``; our registry wins over RecBole's.

    Raises:
        UnknownModelError: listing the available models and the closest match.
    """
    if name in MODEL_MODULES:
        return getattr(importlib.import_module(MODEL_MODULES[name]), name)
    for sub in _RECBOLE_SUBMODULES:
        module_path = f"recbole.model.{sub}.{name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            module = importlib.import_module(module_path)
            if hasattr(module, name):
                return getattr(module, name)
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
