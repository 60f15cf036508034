"""recbole-moe: Mixture-of-Experts sequential recommenders (HyMoERec, FAME) and a Mamba4Rec
baseline as a RecBole 1.2.1 plugin.

Importing the package applies :mod:`recbole_moe.compat`, which makes RecBole 1.2.1 work on
numpy 2, pandas 3 and torch >= 2.6.
"""

try:
    import recbole  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without recbole
    raise ImportError(
        "recbole-moe needs RecBole 1.2.1, installed without its dependencies (its metadata "
        "pins ray, which recbole-moe never uses and which has no wheels for Python 3.12). "
        "Run: pip install --no-deps recbole==1.2.1   (or: bash install.sh)"
    ) from exc

from recbole_moe import compat as _compat

_compat.apply()

from recbole_moe.config import Config  # noqa: E402
from recbole_moe.model import available_models, get_model  # noqa: E402
from recbole_moe.quick_start import load_model, run  # noqa: E402
from recbole_moe.tuning import tune  # noqa: E402  (Optuna itself is imported on first use)
from recbole_moe.version import __version__  # noqa: E402

__all__ = ["Config", "available_models", "get_model", "load_model", "run", "tune", "__version__"]
