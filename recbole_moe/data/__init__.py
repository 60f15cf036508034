"""Dataset preparation: raw interaction files -> RecBole atomic files (see ``prepare``)."""

from recbole_moe.data.prepare import (
    KNOWN_DATASETS,
    RAW_ROOT_ENV,
    DataPreparationError,
    DatasetStatsWarning,
    compute_stats,
    ensure_dataset,
    find_raw_source,
    inter_path,
    prepare_dataset,
)

__all__ = [
    "KNOWN_DATASETS",
    "RAW_ROOT_ENV",
    "DataPreparationError",
    "DatasetStatsWarning",
    "compute_stats",
    "ensure_dataset",
    "find_raw_source",
    "inter_path",
    "prepare_dataset",
]
