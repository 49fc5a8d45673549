"""Typed configs: dataclasses loaded from YAML with ``key.sub=value`` overrides.

Every entry point (trainers, eval, serve, demo) has one dataclass here
(:mod:`latentrl.config.recipes`), built from shared sections
(:mod:`latentrl.config.sections`) by the loader (:mod:`latentrl.config.loader`). A config is
built by :func:`load_config` from an optional YAML file and command-line overrides;
unknown keys, wrong types and missing required values raise :class:`ConfigError`
naming the dotted key and where the value came from (the file or the command line).
Cross-field rules live in each dataclass's ``__post_init__`` and raise ``ValueError``;
:func:`load_config` re-raises them as :class:`ConfigError` with the source attached.

>>> cfg = load_config(RolloutConfig, overrides=["backend=hf", "max_model_len=256"])
>>> (cfg.backend, cfg.max_model_len)
('hf', 256)
"""

from latentrl.config.loader import (
    ConfigError,
    config_to_dict,
    load_config,
    require_model_references,
    require_non_negative,
    require_positive,
    save_config,
)
from latentrl.config.recipes import (
    CoCoVaConfig,
    DemoConfig,
    DLRConfig,
    EvalConfig,
    GRPOTrainConfig,
    InspectConfig,
    LaSERConfig,
    RetrievalEvalConfig,
    ServeConfig,
)
from latentrl.config.sections import (
    LaSERLossConfig,
    LatentPluginSettings,
    LoopConfig,
    LQFormerSettings,
    PretrainConfig,
    RationaleConfig,
    RetrieverSettings,
    RolloutConfig,
    TaskConfig,
    TinyModelConfig,
    TinyViTConfig,
)

__all__ = [
    "CoCoVaConfig",
    "ConfigError",
    "DLRConfig",
    "DemoConfig",
    "EvalConfig",
    "GRPOTrainConfig",
    "InspectConfig",
    "LQFormerSettings",
    "LaSERConfig",
    "LaSERLossConfig",
    "LatentPluginSettings",
    "LoopConfig",
    "PretrainConfig",
    "RationaleConfig",
    "RetrievalEvalConfig",
    "RetrieverSettings",
    "RolloutConfig",
    "ServeConfig",
    "TaskConfig",
    "TinyModelConfig",
    "TinyViTConfig",
    "config_to_dict",
    "load_config",
    "require_model_references",
    "require_non_negative",
    "require_positive",
    "save_config",
]
