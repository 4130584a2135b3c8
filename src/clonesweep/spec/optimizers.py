"""The config keys of Keras 3's built-in optimizers, known without importing Keras.

``optimizer.<key>`` search-space entries and the settings under ``training.optimizer`` are
checked against this table at load time, so a typo such as ``optimizer.learnig_rate`` is
refused before any worker starts. The table lists every name ``keras.optimizers.get``
accepts (Keras lower-cases the name) with the keys of its ``get_config()``;
``tests/unit/spec/test_optimizers.py`` compares it with the installed Keras so it cannot drift.
An optimizer missing from the table (a custom, registered one) is not checked.
"""

from __future__ import annotations

__all__ = ["OPTIMIZER_KEYS", "optimizer_keys"]

# Keys every Keras 3 optimizer's get_config() holds (keras.optimizers.Optimizer).
_COMMON = (
    "clipnorm",
    "clipvalue",
    "ema_momentum",
    "ema_overwrite_frequency",
    "global_clipnorm",
    "gradient_accumulation_steps",
    "learning_rate",
    "loss_scale_factor",
    "name",
    "use_ema",
    "weight_decay",
)

_OWN: dict[str, tuple[str, ...]] = {
    "adadelta": ("epsilon", "rho"),
    "adafactor": ("beta_2_decay", "clip_threshold", "epsilon_1", "epsilon_2", "relative_step"),
    "adagrad": ("epsilon", "initial_accumulator_value"),
    "adam": ("amsgrad", "beta_1", "beta_2", "epsilon"),
    "adamax": ("beta_1", "beta_2", "epsilon"),
    "adamw": ("amsgrad", "beta_1", "beta_2", "epsilon"),
    "ftrl": (
        "beta",
        "initial_accumulator_value",
        "l1_regularization_strength",
        "l2_regularization_strength",
        "l2_shrinkage_regularization_strength",
        "learning_rate_power",
    ),
    "lion": ("beta_1", "beta_2"),
    "muon": (
        "adam_beta_1",
        "adam_beta_2",
        "adam_lr_ratio",
        "adam_weight_decay",
        "epsilon",
        "exclude_embeddings",
        "exclude_layers",
        "momentum",
        "muon_a",
        "muon_b",
        "muon_c",
        "nesterov",
        "ns_steps",
        "rms_rate",
    ),
    "nadam": ("beta_1", "beta_2", "epsilon"),
    "rmsprop": ("centered", "epsilon", "momentum", "rho"),
    "schedulefreeadamw": ("beta_1", "beta_2", "epsilon", "warmup_steps"),
    "sgd": ("momentum", "nesterov"),
}

#: Optimizer name (lower case, as ``keras.optimizers.get`` reads it) -> its config keys.
OPTIMIZER_KEYS: dict[str, frozenset[str]] = {
    name: frozenset(_COMMON + own) for name, own in _OWN.items()
}


def optimizer_keys(name: str) -> frozenset[str] | None:
    """The settable config keys of optimizer ``name``; None when it is not a built-in.

    ``name`` itself is left out: it is the optimizer's identity, not a hyperparameter.

    Example:
        >>> "learning_rate" in optimizer_keys("Adam")
        True
    """
    keys = OPTIMIZER_KEYS.get(name.lower())
    return None if keys is None else keys - {"name"}
