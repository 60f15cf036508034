"""Settings given on a command line: ``--key=value`` / ``--key value`` overrides and the
``--config_files`` list, as ``recbole-moe``, ``recbole-moe tune`` and ``recbole-moe benchmark``
read them."""

from __future__ import annotations

from collections.abc import Sequence


def parse_overrides(extra: Sequence[str]) -> dict:
    """``["--epochs=2", "--topk", "[5,10]"]`` -> ``{"epochs": "2", "topk": "[5,10]"}``.

    Each setting is ``--key=value`` (RecBole's form) or ``--key value``. Values stay strings;
    RecBole's ``Config`` converts them exactly as it converts its own command line (numbers,
    lists, dicts, booleans). A bare ``--key`` (followed by another ``--x`` or by nothing) has no
    value and is refused, as before: switches are written ``--key=true`` / ``--key true``.

    Raises:
        ValueError: an argument that is not a setting, a setting without a value or with an
            empty key, or one key given twice with different values.
    """
    overrides: dict = {}
    args = list(extra)
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise ValueError(
                f"Unrecognised argument '{arg}': settings look like --key=value or --key value "
                "(e.g. --epochs=10 or --epochs 10; quote a list with spaces: --topk '[5, 10]')."
            )
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif index + 1 < len(args) and not args[index + 1].startswith("--"):
            key, value = arg[2:], args[index + 1]
            index += 1
        else:
            raise ValueError(
                f"Setting '{arg}' has no value: write {arg}=VALUE or {arg} VALUE "
                "(switches take one too, e.g. --show_progress=false)."
            )
        if not key:
            raise ValueError(f"Unrecognised argument '{arg}': the key is empty.")
        if key in overrides and overrides[key] != value:
            raise ValueError(f"Override --{key} given twice with different values.")
        overrides[key] = value
        index += 1
    return overrides


def split_config_files(values: Sequence[str] | None) -> list[str] | None:
    """Accept ``--config_files a.yaml b.yaml`` and RecBole's ``--config_files "a.yaml b.yaml"``."""
    if not values:
        return None
    return [f for value in values for f in value.strip().split(" ") if f]
