"""Search spaces: RecBole's hyper-parameter file format, and a YAML form of it.

RecBole's format (``recbole/trainer/hyper_tuning.py``, ``HyperTuning._build_space_from_file``),
one parameter a line::

    learning_rate loguniform -8,0
    embedding_size choice [64,96,128]
    dropout_prob uniform 0.1,0.5
    n_experts quniform 2,8,2

* ``choice [v1, v2, ...]``: one of the listed Python literals.
* ``uniform a,b``: a float drawn uniformly from ``[a, b]``.
* ``loguniform a,b``: ``exp(x)`` with ``x`` uniform in ``[a, b]``: the bounds are natural
  logarithms (hyperopt's ``hp.loguniform``), so ``-8,0`` searches ``[e^-8, 1]``.
* ``quniform a,b,q``: ``round(x / q) * q`` with ``x`` uniform in ``[a, b]`` (hyperopt's
  ``hp.quniform``): the multiples of ``q`` from ``round(a / q) * q`` to ``round(b / q) * q``.
  When ``a``, ``b`` and ``q`` are whole numbers the values are integers (hyperopt returns
  floats such as ``4.0``, which integer settings like ``n_experts`` refuse).

Numbers may be separated by commas (RecBole's form) or spaces. Blank lines and lines starting
with ``#`` are skipped. Any other line that does not parse is an error naming the file and line.

The YAML form (a file ending in ``.yaml`` or ``.yml``) is either RecBole's ``params_dict``
(``HyperTuning._build_space_from_dict``)::

    choice: {n_experts: [4, 8], top_k: [1, 2]}
    loguniform: {learning_rate: [-8, 0]}

or one entry per parameter, as a mapping or as the text of a line::

    n_experts: {choice: [4, 8]}
    learning_rate: loguniform -8 0
"""

from __future__ import annotations

import ast
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from recbole_moe.errors import RecBoleMoeError

#: The parameter types of RecBole's format.
KINDS = ("choice", "uniform", "loguniform", "quniform")
#: Values an Optuna categorical distribution holds as they are; others are stored as ``repr``.
_PLAIN = (type(None), bool, int, float, str)


class TuneError(RecBoleMoeError, ValueError):
    """Bad input to ``recbole-moe tune``: the command prints its message as one line."""


class SpaceError(TuneError):
    """A search-space file or entry that cannot be used."""


def _whole(value: float) -> bool:
    return float(value).is_integer()


@dataclass(frozen=True)
class Param:
    """One searched setting.

    ``args``: ``choice``: the values; ``uniform``: ``(low, high)``; ``loguniform``: ``(low,
    high)`` as natural logarithms; ``quniform``: ``(low, high, q)``. ``where``: ``file:line``
    (or the mapping's name) for messages.
    """

    name: str
    kind: str
    args: tuple
    where: str = ""

    # -- the values ---------------------------------------------------------------------------
    def quniform_range(self) -> tuple[int, int]:
        """``(k_min, k_max)``: the multiples ``k * q`` that ``round(x / q) * q`` reaches with
        positive probability for ``x`` in ``[low, high]``."""
        low, high, q = self.args
        k_min, k_max = math.floor(low / q + 0.5), math.ceil(high / q - 0.5)
        if k_min > k_max:  # low == high on a half-way point: numpy rounds half to even
            k_min = k_max = int(round(low / q))
        return int(k_min), int(k_max)

    def _quniform_value(self, k: int) -> int | float:
        q = self.args[2]
        if self.integer:
            return int(k * q)
        return round(k * q, 12)

    @property
    def integer(self) -> bool:
        """A ``quniform`` whose bounds and step are whole numbers: its values are ints."""
        return self.kind == "quniform" and all(_whole(v) for v in self.args)

    @property
    def encoded(self) -> bool:
        """A ``choice`` with a value Optuna cannot store (a list, a dict): stored as ``repr``."""
        return self.kind == "choice" and not all(isinstance(v, _PLAIN) for v in self.args)

    def grid_values(self) -> list | None:
        """Every value, for grid search (``None`` for a continuous parameter)."""
        if self.kind == "choice":
            return [repr(v) for v in self.args] if self.encoded else list(self.args)
        if self.kind == "quniform":
            k_min, k_max = self.quniform_range()
            return [self._quniform_value(k) for k in range(k_min, k_max + 1)]
        return None

    def suggest(self, trial) -> Any:
        """Draw this parameter in an Optuna trial; returns the value the config receives."""
        if self.kind == "choice":
            if self.encoded:
                return ast.literal_eval(
                    trial.suggest_categorical(self.name, [repr(v) for v in self.args])
                )
            return trial.suggest_categorical(self.name, list(self.args))
        if self.kind == "uniform":
            return trial.suggest_float(self.name, float(self.args[0]), float(self.args[1]))
        if self.kind == "loguniform":
            low, high = (math.exp(v) for v in self.args)
            return trial.suggest_float(self.name, low, high, log=True)
        k_min, k_max = self.quniform_range()
        q = self.args[2]
        if self.integer:
            return int(trial.suggest_int(self.name, int(k_min * q), int(k_max * q), step=int(q)))
        value = trial.suggest_float(
            self.name, self._quniform_value(k_min), self._quniform_value(k_max), step=float(q)
        )
        return round(value, 12)

    def describe(self) -> str:
        """The parameter as a line of RecBole's format."""
        if self.kind == "choice":
            return f"{self.name} choice {list(self.args)!r}"
        return f"{self.name} {self.kind} " + ",".join(repr(float(v)) for v in self.args)


@dataclass(frozen=True)
class Space:
    """An ordered set of :class:`Param` read from ``source``."""

    params: tuple
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def suggest(self, trial) -> dict[str, Any]:
        return {p.name: p.suggest(trial) for p in self.params}

    def grid(self) -> dict[str, list]:
        """The search space of Optuna's ``GridSampler``.

        Raises:
            SpaceError: a continuous parameter (``uniform`` or ``loguniform``).
        """
        grid = {}
        for param in self.params:
            values = param.grid_values()
            if values is None:
                raise SpaceError(
                    f"{param.where}: grid search needs a finite set of values, but "
                    f"'{param.name}' is {param.kind}; use choice or quniform, or another "
                    "--sampler (tpe, random)"
                )
            grid[param.name] = values
        return grid

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def describe(self) -> list[str]:
        return [p.describe() for p in self.params]

    def warnings(self) -> list[str]:
        """Likely mistakes that are still valid input (printed, never fatal)."""
        messages = []
        for p in self.params:
            if p.kind == "loguniform" and 0 <= p.args[0] < p.args[1] <= 1:
                low, high = (math.exp(v) for v in p.args)
                messages.append(
                    f"{p.where}: loguniform takes natural-log bounds (RecBole's format): "
                    f"'{p.name}' is searched in [{low:.4g}, {high:.4g}]; for "
                    f"[{p.args[0]:g}, {p.args[1]:g}] itself write loguniform "
                    + (
                        f"{math.log(p.args[0]):.4g},{math.log(p.args[1]):.4g}"
                        if p.args[0] > 0
                        else "LOG_LOW,LOG_HIGH"
                    )
                )
        return messages


# --------------------------------------------------------------------------------------------
# Building parameters, with one message per problem
# --------------------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _numbers(text: str, count: int, kind: str, where: str) -> tuple[float, ...]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    expected = {2: "low and high", 3: "low, high and q"}[count]
    if len(parts) != count:
        raise SpaceError(f"{where}: {kind} needs {expected}, found '{text.strip()}'")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise SpaceError(
            f"{where}: {kind} needs numbers ({expected}), found '{text.strip()}'"
        ) from None


def make_param(name: Any, kind: Any, args: Any, where: str) -> Param:
    """A checked :class:`Param`; ``args`` is the text after the type (a line) or a list (YAML).

    Raises:
        SpaceError: unknown type, wrong number of values, empty range, bad literal.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpaceError(f"{where}: '{name}' is not a setting name")
    if kind not in KINDS:
        close = [k for k in KINDS if k[:3] == str(kind)[:3]]
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpaceError(
            f"{where}: unknown type '{kind}' for '{name}'{hint}; expected one of "
            + ", ".join(KINDS)
        )
    if kind == "choice":
        if isinstance(args, str):
            try:
                values = ast.literal_eval(args.strip())
            except (ValueError, SyntaxError):
                raise SpaceError(
                    f"{where}: choice values for '{name}' must be a list of "
                    f"literals such as [64, 128], found '{args.strip()}'"
                ) from None
        else:
            values = args
        if not isinstance(values, (list, tuple)):
            raise SpaceError(
                f"{where}: choice values for '{name}' must be a list such as "
                f"[64, 128], found {values!r}"
            )
        if not values:
            raise SpaceError(f"{where}: empty range: choice for '{name}' lists no value")
        return Param(name, kind, tuple(values), where)
    count = 3 if kind == "quniform" else 2
    if isinstance(args, str):
        numbers = _numbers(args, count, kind, where)
    else:
        if not isinstance(args, (list, tuple)):
            args = [args]
        numbers = _numbers(" ".join(str(a) for a in args), count, kind, where)
    if not all(math.isfinite(v) for v in numbers):
        raise SpaceError(f"{where}: {kind} bounds for '{name}' must be finite numbers")
    low, high = numbers[:2]
    if low > high:
        bounds = "log bounds " if kind == "loguniform" else ""
        raise SpaceError(
            f"{where}: empty range: {kind} for '{name}' has {bounds}low {low:g} above high {high:g}"
        )
    if kind == "quniform" and not numbers[2] > 0:
        raise SpaceError(f"{where}: quniform step q for '{name}' must be > 0, found {numbers[2]:g}")
    return Param(name, kind, numbers, where)


def _add(params: dict[str, Param], param: Param) -> None:
    if param.name in params:
        raise SpaceError(
            f"{param.where}: '{param.name}' is defined twice (also at {params[param.name].where})"
        )
    params[param.name] = param


def parse_lines(lines: Iterable[str], source: str) -> Space:
    """RecBole's line format; ``source`` names the file in messages."""
    params: dict[str, Param] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        tokens = line.split()
        if len(tokens) < 3:
            raise SpaceError(
                f"{where}: expected 'name type values' (e.g. 'learning_rate "
                f"loguniform -8,0'), found '{line}'"
            )
        _add(params, make_param(tokens[0], tokens[1], " ".join(tokens[2:]), where))
    if not params:
        raise SpaceError(
            f"{source}: no parameter to search (lines look like 'n_experts choice [4,8]')"
        )
    return Space(tuple(params.values()), source)


def _yaml_items(text: str, source: str) -> list[tuple[Any, Any, int, dict]]:
    """``(key, value, line, {subkey: line})`` of each top-level entry."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpaceError(f"{source}{line}: not valid YAML: {problem}") from exc
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise SpaceError(
            f"{source}:{root.start_mark.line + 1}: the search space must be a "
            "mapping (name: {choice: [..]} or choice: {name: [..]})"
        )
    loader = yaml.SafeLoader("")
    items = []
    for key_node, value_node in root.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        lines = {}
        if isinstance(value_node, yaml.MappingNode):
            lines = {
                loader.construct_object(k, deep=True): k.start_mark.line + 1
                for k, _ in value_node.value
            }
        items.append((key, value, key_node.start_mark.line + 1, lines))
    return items


def parse_yaml(text: str, source: str) -> Space:
    """The YAML form (RecBole's ``params_dict``, or one entry per parameter)."""
    params: dict[str, Param] = {}
    for key, value, line, sub_lines in _yaml_items(text, source):
        where = f"{source}:{line}"
        if key in KINDS:  # RecBole's params_dict: type -> {name: args}
            if not isinstance(value, dict):
                raise SpaceError(
                    f"{where}: '{key}' must map setting names to values, e.g. "
                    f"{key}: {{n_experts: [4, 8]}}"
                )
            for name, args in value.items():
                _add(params, make_param(name, key, args, f"{source}:{sub_lines.get(name, line)}"))
        elif isinstance(value, dict):
            if len(value) != 1:
                raise SpaceError(
                    f"{where}: '{key}' needs exactly one type, e.g. {key}: {{choice: [4, 8]}}"
                )
            ((kind, args),) = value.items()
            _add(params, make_param(key, kind, args, where))
        elif isinstance(value, str):
            kind, _, args = value.strip().partition(" ")
            _add(params, make_param(key, kind, args, where))
        else:
            raise SpaceError(
                f"{where}: '{key}' needs a type and its values, e.g. {key}: "
                "{choice: [4, 8]} or {key}: loguniform -8 0"
            )
    if not params:
        raise SpaceError(f"{source}: no parameter to search")
    return Space(tuple(params.values()), source)


def parse_mapping(mapping: Mapping, source: str = "params") -> Space:
    """A space given from Python as a mapping (either YAML form)."""
    return parse_yaml(yaml.safe_dump(dict(mapping), sort_keys=False), source)


def load_space(params: str | os.PathLike | Mapping | Space) -> Space:
    """A :class:`Space` from a file path (RecBole's format, or YAML for ``.yaml``/``.yml``), a
    mapping, or a :class:`Space`.

    Raises:
        SpaceError: the file is missing or unreadable, or an entry does not parse.
    """
    if isinstance(params, Space):
        return params
    if isinstance(params, Mapping):
        return parse_mapping(params)
    path = os.fspath(params)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise SpaceError(f"cannot read search space file {path}: {exc.strerror}") from exc
    if path.lower().endswith((".yaml", ".yml")):
        return parse_yaml(text, path)
    return parse_lines(text.splitlines(), path)
