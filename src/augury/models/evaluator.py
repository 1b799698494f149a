"""Which code scores a model: one decision per model, made when it is loaded, the same in every path.

Some models have two exact evaluators: scikit-learn's HistGradientBoosting models are scored by
scikit-learn or by augury's compiled kernel (`augury.models.hgb`, the same answers to the bit). Which one
scores a model is chosen by one setting with one default, shared by `load_model`, ``augury batch``,
``augury serve`` and ``augury advise``, so a prediction computed ahead of time and one computed on
request come from the same code:

- ``"auto"`` (the default): the compiled evaluator where numba is installed (``augury[fast]``) and the
  model fits it, else the framework's own;
- ``"compiled"``: the same, but a model the kernel could score while numba is missing is a load error
  rather than a quiet fall-back;
- ``"library"``: the framework's own code, always.

The compiled evaluator is still checked on probe rows when a model loads; if it differs there, the
framework's own scores the model, and that is what is recorded. The outcome is `ModelInfo.evaluator`,
one of the names below: batch runs write it into their run metadata, publishing carries it into the
store version's metadata, and the server puts it in the provenance of every answer.
"""

from __future__ import annotations

from typing import Literal

from augury.errors import ConfigError

Choice = Literal["auto", "compiled", "library"]
#: the values of the setting (``--evaluator`` on the command line).
CHOICES: tuple[Choice, ...] = ("auto", "compiled", "library")
#: the one default: `load_model`, batch runs, the server and the advisor all start from it.
DEFAULT: Choice = "auto"

#: what `ModelInfo.evaluator` says, by adapter: the code that computes the predictions.
SKLEARN = "sklearn"
HGB_COMPILED = "hgb-compiled"
ONNXRUNTIME = "onnxruntime"
XGBOOST = "xgboost"
LIGHTGBM = "lightgbm"
PYTHON = "python"


def check_choice(value: str) -> Choice:
    """`value` as a `Choice`; ConfigError naming the choices otherwise."""
    for choice in CHOICES:
        if value == choice:
            return choice
    raise ConfigError(f"evaluator must be one of {', '.join(CHOICES)}, not {value!r}")


def choice_for(evaluator: str) -> Choice:
    """The choice that makes a model's decision again, given the evaluator it got (a batch run's worker
    processes load the model with it, so they score it with the evaluator the run records)."""
    return "compiled" if evaluator == HGB_COMPILED else "library"
