"""RecBole ``Config`` that also reads recbole-moe's property files.

RecBole's ``Config`` only looks in its own ``properties/`` folder and resolves model names in
``recbole.model``. This subclass (the pattern RecBole-GNN uses) resolves names through our
registry and layers our files on top of RecBole's, so the priority is, lowest first:
RecBole overall/model/dataset defaults < our ``overall.yaml`` < our model file < our dataset
file < the model file's ``dataset_overrides`` section for this dataset < ``config_files``
< ``config_dict`` (where the command line's ``--key=value`` overrides go).

A model file's optional ``dataset_overrides: {<dataset>: {key: value}}`` holds the model's own
values for particular datasets (Mamba4Rec's dropout on the Amazon datasets); it is applied right
after the dataset file, so it beats the dataset file's values for that model only. It is never a
setting itself.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import recbole as recbole_package
import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_moe.data.atomic import read_header
from recbole_moe.data.prepare import DataPreparationError
from recbole_moe.errors import ConfigError, UnknownModelError
from recbole_moe.model import get_model
from recbole_moe.process_group import init_device
from recbole_moe.recbole_settings import check_recbole_settings, resolve_amp

PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "properties")
#: Datasets RecBole reads from its own package whatever ``data_path`` says.
RECBOLE_BUNDLED = ("ml-100k",)
#: Section of a model property file with per-dataset values: ``{<dataset>: {key: value}}``.
DATASET_OVERRIDES_KEY = "dataset_overrides"


def model_property_file(model: str) -> str:
    """Path of the property file of ``model`` (may not exist): ours in ``properties/model/``,
    or, for a model of a registered model package, ``<Name>.yaml`` next to its module."""
    own = os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml")
    if os.path.isfile(own):
        return own
    try:
        module_file = sys.modules[get_model(model).__module__].__file__ or ""
    except UnknownModelError:
        return own
    beside = os.path.join(os.path.dirname(module_file), f"{model}.yaml")
    return beside if os.path.isfile(beside) else own


def dataset_property_file(dataset: str) -> str:
    """Path of our property file for ``dataset`` (may not exist)."""
    return os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml")


#: The evaluation protocol of a dataset without a property file.
PROTOCOL_FILE = os.path.join(PROPERTIES_DIR, "protocol.yaml")


def inter_header(path: str, separator: str | None, encoding: str | None) -> list[str]:
    """The field names of an atomic file's header (empty when the file is missing or
    malformed: the data checks report that, with file and line)."""
    try:
        return [name for name, _ in read_header(path, separator or "\t", encoding)]
    except (OSError, DataPreparationError):
        return []


def dataset_section(loaded: Any, dataset: str, path: str) -> dict:
    """The ``dataset_overrides`` entry for ``dataset`` of a loaded model property file
    (empty when there is none).

    Raises:
        ConfigError: the section, or its entry for ``dataset``, is not a mapping.
    """
    section = (loaded.get(DATASET_OVERRIDES_KEY) if isinstance(loaded, dict) else None) or {}
    settings = section.get(dataset) if isinstance(section, dict) else None
    if not isinstance(section, dict) or not isinstance(settings, (dict, type(None))):
        raise ConfigError(
            f"property file {path}: '{DATASET_OVERRIDES_KEY}' must map dataset names to "
            "mappings of settings, e.g. {beauty: {dropout_prob: 0.4}}"
        )
    return dict(settings or {})


def read_yaml(path: str) -> Any:
    """The content of the YAML file ``path`` (None for an empty file)."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


class Config(RecBoleConfig):
    """RecBole configuration with recbole-moe's models and property files.

    Args:
        model: a model name (ours or RecBole's) or a model class.
        dataset: the dataset name.
        config_file_list: YAML files, later ones win.
        config_dict: overrides, highest priority; string values are parsed like RecBole's
            command line (``"[5, 10]"`` becomes a list, ``"true"`` a bool).
    """

    def __init__(
        self,
        model: Any = None,
        dataset: str | None = None,
        config_file_list: list[str] | None = None,
        config_dict: dict | None = None,
        override_source: str = "config_dict",
    ) -> None:
        #: Where ``config_dict`` came from, for error messages (e.g. "the command line").
        self.override_source = override_source
        self.config_file_list = list(config_file_list or [])
        super().__init__(model, dataset, config_file_list, config_dict)

    def _load_config_files(self, file_list) -> dict:
        """RecBole's loader, with a clear error for a missing or broken YAML file."""
        file_config_dict: dict = {}
        for file in file_list or []:
            try:
                with open(file, encoding="utf-8") as f:
                    loaded = yaml.load(f.read(), Loader=self.yaml_loader)
            except OSError as exc:
                raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {file} is not valid YAML: {exc}") from exc
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"config file {file} must hold a mapping of settings (key: value), "
                    f"found a {type(loaded).__name__}"
                )
            file_config_dict.update(loaded)
        return file_config_dict

    def source_of(self, key: str) -> str:
        """Where ``key``'s final value came from, for error messages."""
        if key in self.variable_config_dict:
            return self.override_source
        for path in reversed(self.config_file_list or []):
            if key in (read_yaml(path) or {}):
                return f"config file {path}"
        if key in getattr(self, "recbole_family_keys", ()):
            return f"RecBole's settings for {self.model} (labeled data, AUC and LogLoss)"
        model_file = model_property_file(self.model)
        if os.path.isfile(model_file):
            section = (read_yaml(model_file) or {}).get(DATASET_OVERRIDES_KEY) or {}
            if key in (section.get(self.dataset) or {}):
                return f"property file {model_file} ({DATASET_OVERRIDES_KEY}: {self.dataset})"
        dataset_file = dataset_property_file(self.dataset)
        if getattr(self, "custom_dataset", False):
            dataset_file = PROTOCOL_FILE
        for path in (dataset_file, model_file):
            if os.path.isfile(path) and key in (read_yaml(path) or {}):
                return f"property file {path}"
        return "RecBole's defaults"

    def _init_device(self) -> None:
        # A distributed worker (``local_rank`` set by the launcher) joins its process group with
        # the backend of ``dist_backend`` (gloo on CPU, nccl on CUDA); RecBole's version only
        # knows nccl on CUDA. A single-process run keeps RecBole's device selection.
        if "local_rank" not in self.final_config_dict:
            super()._init_device()
            problems = getattr(self, "recbole_problems", None) or []
            if self.external_config_dict.get("device") is not None and not any(
                problem.startswith("device=") for problem in problems
            ):
                # RecBole derives the device from gpu_id alone; a device the user names wins
                # (checked to exist in recbole_settings: never replaced silently).
                self.final_config_dict["device"] = torch.device(
                    str(self.external_config_dict["device"]).strip()
                )
        else:
            init_device(self)
        # ``enable_amp: auto`` (the default) becomes a bool once the device is known.
        device = self.final_config_dict.get("device")
        device_type = getattr(device, "type", str(device or "cpu"))
        self.final_config_dict["enable_amp"] = resolve_amp(
            self.final_config_dict.get("enable_amp", False), device_type
        )

    def _load_cmd_line(self) -> dict:
        # Our entry points parse the command line themselves and pass ``--key=value`` pairs in
        # ``config_dict``; reading ``sys.argv`` here would pick up pytest's or a host program's
        # arguments.
        return dict()

    def _get_model_and_dataset(self, model, dataset):
        if isinstance(model, str):
            model = get_model(model)
        elif model is None and isinstance(self.external_config_dict.get("model"), str):
            model = get_model(self.external_config_dict["model"])
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset) -> None:
        super()._load_internal_config_dict(model, model_class, dataset)
        # RecBole looks for properties/model/<model>.yaml, but ships LightGBM's and XGBoost's
        # as lightgbm.yaml and xgboost.yaml: not found on a case-sensitive file system.
        model_dir = os.path.join(os.path.dirname(recbole_package.__file__), "properties", "model")
        if not os.path.isfile(os.path.join(model_dir, f"{model}.yaml")):
            lower = os.path.join(model_dir, f"{model.lower()}.yaml")
            if os.path.isfile(lower):
                self._update_internal_config_dict(lower)
        recbole = dict(self.internal_config_dict)
        self._update_internal_config_dict(os.path.join(PROPERTIES_DIR, "overall.yaml"))
        model_file = model_property_file(model)
        per_dataset: dict = {}
        if os.path.isfile(model_file):
            loaded = self._update_internal_config_dict(model_file)
            per_dataset = dataset_section(loaded, dataset, model_file)
            self.internal_config_dict.pop(DATASET_OVERRIDES_KEY, None)
        dataset_file = dataset_property_file(dataset)
        #: No property file of ours for this dataset: it gets the protocol's defaults, and its
        #: time field is loaded when its header has one (``_set_default_parameters``).
        self.custom_dataset = not os.path.isfile(dataset_file)
        if self.custom_dataset:
            dataset_file = PROTOCOL_FILE
        config_dict = self._update_internal_config_dict(dataset_file) or {}
        self.parameters["Dataset"] += [
            key for key in config_dict if key not in self.parameters["Dataset"]
        ]
        self._keep_family_files(recbole)
        # The model's own values for this dataset beat the dataset file (see the module doc).
        self.internal_config_dict.update(per_dataset)
        # Our top-k metrics, valid_metric and full-ranking eval_args are for top-k models;
        # RecBole's context-aware, DIN/DIEN and decision-tree settings score labeled data with
        # AUC and LogLoss, and keep them.
        #: Keys whose value is RecBole's family setting, over ours (for ``source_of``).
        self.recbole_family_keys: tuple[str, ...] = ()
        if "AUC" in (recbole.get("metrics") or []):
            self.recbole_family_keys = ("eval_args", "metrics", "valid_metric")
            for key in self.recbole_family_keys:
                self.internal_config_dict[key] = recbole[key]

    def _keep_family_files(self, recbole: dict) -> None:
        """Keep the files a RecBole model family reads beyond the interactions.

        Our dataset files load the interactions only, for sequential models. RecBole's settings
        for a family (``quick_start_config/knowledge_base.yaml``: ``.kg`` and ``.link``;
        ``context-aware_ml-100k.yaml``: ``.user``, ``.item`` and the rating threshold that
        makes the labels) add sources; those stay, with the threshold and its rating column.
        """
        ours, theirs = self.internal_config_dict.get("load_col"), recbole.get("load_col")
        if not isinstance(ours, dict) or not isinstance(theirs, dict):
            return
        extra = {source: cols for source, cols in theirs.items() if source not in ours}
        if not extra:
            return
        load_col = {**ours, **extra}
        if recbole.get("threshold") and not self.internal_config_dict.get("threshold"):
            self.internal_config_dict["threshold"] = recbole["threshold"]
            load_col["inter"] = theirs.get("inter", ours.get("inter"))
        self.internal_config_dict["load_col"] = load_col

    def _get_final_config_dict(self) -> dict:
        final = super()._get_final_config_dict()
        # A sequential model trained with full-softmax CE must not sample training negatives;
        # RecBole raises unless the user writes ``train_neg_sample_args: ~``. Do it for them
        # when they did not set the key themselves.
        if (
            final.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and final.get("loss_type") == "CE"
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            final["train_neg_sample_args"] = None
        return final

    def _set_default_parameters(self) -> None:
        # RecBole's own checks here raise tracebacks, and it reads other settings without any
        # check; refuse every bad value first, each with its key, value and source.
        check_recbole_settings(self)
        user_data_path = self.external_config_dict.get("data_path")
        super()._set_default_parameters()
        final = self.final_config_dict
        # Absolute, as the checkpoint keeps it: recommend and evaluation from another folder
        # read the data training read.
        final["data_path"] = os.path.abspath(final["data_path"])
        #: Lines for the run's log about what was chosen for the user (``quick_start``).
        self.notes = []
        if self.dataset in RECBOLE_BUNDLED and isinstance(user_data_path, str):
            # RecBole reads its bundled copy whatever data_path says: the user's own copy wins.
            own = os.path.abspath(os.path.join(user_data_path, self.dataset))
            if os.path.isfile(os.path.join(own, f"{self.dataset}.inter")):
                final["data_path"] = own
            else:
                self.notes.append(
                    f"data_path: {own} has no {self.dataset}.inter, so {self.dataset} is read "
                    f"from the copy RecBole ships ({final['data_path']})"
                )
        if self.custom_dataset and "load_col" not in self.external_config_dict:
            self._load_time_field()

    def _load_time_field(self) -> None:
        """Add the time field to ``load_col`` when the ``.inter`` header has it: a dataset
        without a property file orders its histories by time like ours."""
        final = self.final_config_dict
        time_field, load_col = final.get("TIME_FIELD"), final.get("load_col")
        if not time_field or not isinstance(load_col, dict):
            return
        columns = load_col.get("inter")
        if not isinstance(columns, list) or time_field in columns:
            return
        path = os.path.join(final["data_path"], f"{self.dataset}.inter")
        header = inter_header(path, final.get("field_separator"), final.get("encoding"))
        if time_field in header:
            final["load_col"] = {**load_col, "inter": columns + [time_field]}
            self.notes.append(
                f"load_col: the time field '{time_field}' of {path} is loaded as well (the "
                f"dataset has no property file; --load_col sets the columns yourself)"
            )
        elif (
            header
            and final.get("MODEL_TYPE") != ModelType.SEQUENTIAL
            and "eval_args" not in self.external_config_dict
            and isinstance(final.get("eval_args"), dict)
        ):
            # Without times a general model still trains: leave-one-out of a random order.
            final["eval_args"]["order"] = "RO"
            self.notes.append(
                f"eval_args: {path} has no '{time_field}' column, so each user's held-out "
                "items are drawn from a random order (order RO)"
            )
