"""One line per config problem: did-you-mean, renamed keys, pydantic errors as people read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from pruning.registry import did_you_mean


class SectionError(ValueError):
    """A problem found while validating a method section or the trial as a whole; its message
    is already the complete one line (field path included)."""


# Spellings that existed before methods owned their settings, and what replaced them.
MOVED_KEYS = {
    "prune.scorer": "the scorer is the method now: write method: {scorer_method}",
    "prune.score_batches": "moved to snip.score_batches (or grasp.score_batches)",
    "prune.synflow_iterations": "moved to synflow.iterations",
    "imp.dense_checkpoint": "moved to dense_model.checkpoint",
    "dense_cache": "moved to dense_model.cache",
}


_SCORER_METHODS = {"snip": "snip", "grasp": "grasp", "synflow": "synflow", "random": "random",
                   "magnitude": "magnitude_init"}


def moved_key_message(path: str, value: Any = None) -> str:
    """One line for a key of an old spelling, saying what to write instead."""
    method = _SCORER_METHODS.get(value) if isinstance(value, str) else None
    scorer_method = method or ("snip, grasp, synflow, random or magnitude_init (any scorer: "
                               "method: prune_at_init with prune_at_init.scorer)")
    return f"config key {path!r} was renamed: " + MOVED_KEYS[path].format(
        scorer_method=scorer_method)


def fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The field names of the section that `path` points into (for did-you-mean)."""
    for key in path:
        field = model.model_fields.get(str(key))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(model.model_fields)


def format_validation_error(
    error: ValidationError, model: type[BaseModel] | None = None, prefix: str = ""
) -> str:
    """One line for the first problem in `error`, naming its dotted field path (`model` is the
    model validated, for did-you-mean on unknown keys; default TrialConfig)."""
    return format_error_detail(error.errors()[0], model, prefix)


def format_error_detail(
    first: dict[str, Any], model: type[BaseModel] | None = None, prefix: str = ""
) -> str:
    """One line for one entry of `ValidationError.errors()`."""
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, SectionError):
        return str(cause)
    loc = tuple(first["loc"])
    path = prefix + ".".join(str(part) for part in loc) if loc else prefix.rstrip(".")
    if first["type"] == "extra_forbidden" and path in MOVED_KEYS:
        return moved_key_message(path, first.get("input"))
    if first["type"] == "extra_forbidden":
        if model is None:
            from trainables.config.trial import TrialConfig

            model = TrialConfig
        allowed = fields_at(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), allowed)
        return f"unknown config key {path!r}{hint}; allowed here: {', '.join(allowed)}"
    message = first["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    where = f"config field {path!r}" if path else "config"
    if first["type"] in ("value_error", "assertion_error") or "input" not in first:
        return f"{where}: {message}"
    return f"{where}: {message} (got {first['input']!r})"


