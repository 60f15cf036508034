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
from typing import Any

import recbole as recbole_package
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

from recbole_moe.errors import ConfigError
from recbole_moe.model import get_model
from recbole_moe.process_group import init_device
from recbole_moe.recbole_settings import check_recbole_settings, resolve_amp

PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "properties")
#: Section of a model property file with per-dataset values: ``{<dataset>: {key: value}}``.
DATASET_OVERRIDES_KEY = "dataset_overrides"


def model_property_file(model: str) -> str:
    """Path of our property file for ``model`` (may not exist)."""
    return os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml")


def dataset_property_file(dataset: str) -> str:
    """Path of our property file for ``dataset`` (may not exist)."""
    return os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml")


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
        model_file = model_property_file(self.model)
        if os.path.isfile(model_file):
            section = (read_yaml(model_file) or {}).get(DATASET_OVERRIDES_KEY) or {}
            if key in (section.get(self.dataset) or {}):
                return f"property file {model_file} ({DATASET_OVERRIDES_KEY}: {self.dataset})"
        for path in (dataset_property_file(self.dataset), model_file):
            if os.path.isfile(path) and key in (read_yaml(path) or {}):
                return f"property file {path}"
        return "RecBole's defaults"

    def _init_device(self) -> None:
        # A distributed worker (``local_rank`` set by the launcher) joins its process group with
        # the backend of ``dist_backend`` (gloo on CPU, nccl on CUDA); RecBole's version only
        # knows nccl on CUDA. A single-process run keeps RecBole's device selection.
        if "local_rank" not in self.final_config_dict:
            super()._init_device()
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
        if os.path.isfile(dataset_file):
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
        if "AUC" in (recbole.get("metrics") or []):
            for key in ("eval_args", "metrics", "valid_metric"):
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
        super()._set_default_parameters()
