"""The experiment trackers a suite can name (`log_with`, `--log-with`): accelerate's names, the package each
needs, the install line for a missing one, and the settings the harness sets itself. Declarations only; the
runs are harness/train/tracking.py's."""

from __future__ import annotations

import importlib.util

# accelerate's tracker names (accelerate.tracking.LOGGER_TYPE_TO_CLASS) -> the module that must be importable
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio", "aim": "aim",
            "comet_ml": "comet_ml", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}
TRACKERS = tuple(PACKAGES)
EXTRAS = ("tensorboard", "mlflow", "wandb")   # optional extras of this package (pyproject.toml)
DISTRIBUTIONS = {"comet_ml": "comet-ml"}        # pip names that differ from the module name
# what the harness sets for every cell (one run per cell, named by suite and cell key): a suite that set them
# would merge cells into one run or split one
RESERVED = {"tensorboard": ("purge_step",),   # a resume's: hides a killed attempt's points after the checkpoint
            "mlflow": ("run_id", "run_name", "experiment_name", "nested_run"),
            "wandb": ("project", "name", "id", "resume", "reinit")}
DEFAULT_LOG_EVERY = 10   # optimizer steps between two train-loss points
TENSORBOARD_DIR = "tensorboard"   # under the output directory, unless the suite gives logging_dir


def install_line(name: str) -> str:
    if name in EXTRAS:
        return f'pip install "peft-bench-harness[{name}]"'
    return f"pip install {DISTRIBUTIONS.get(name, PACKAGES[name])}"


def missing(names) -> list[str]:
    """The trackers whose package is not importable here (accelerate would leave them out without a word)."""
    return [n for n in names if importlib.util.find_spec(PACKAGES[n]) is None]


def parse_option(text: str) -> list[str]:
    """`--log-with tensorboard,mlflow` -> the names; `none` (or an empty text) -> no tracker."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return [] if names == ["none"] else names
