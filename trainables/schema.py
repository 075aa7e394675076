"""The fields a trial writes and its readers read, defined once and versioned.

A trial writes two kinds of row into its `result.json` (one JSON object per line): an **epoch**
row per epoch (trainables/loop.py) and a **round** row per round (trainables/methods/rounds.py),
which is also its round checkpoint's `metrics.json`, with per-layer counts. A checkpoint holds
a **state** (trainables/methods/rounds.py; stored by trainables/checkpoints.py).

Each field has a `key`, the name the code uses (`ROUND_ROW.row(test_acc=...)` to write,
`ROUND_ROW.read(row)["test_acc"]` to read), and a `name`, what the files hold. They are the same
unless a field is renamed on disk: then `name` changes here, once, and the old name goes into
`aliases`, so experiments written before still read. Readers read rows through `read`
(analysis/load.py, trainables/tickets.py, and through them the export and --mask-overlap);
tests/test_schema.py runs the real writers and the real readers against these definitions.

Fields not declared here are allowed and kept as they are: a method's tags (trainables/methods),
a round's cost (trainables/measure.py: one latency field per batch size), its device, and what
plug-ins add.

`SCHEMA_VERSION` is written in every round row (`schema_version`). A reader refuses rows of a
newer version in one line (`check_version`); rows without it are of version 1, the layout
before the round store.

No torch, no Ray here: the analysis imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2
#: What the rows of experiments written before `schema_version` was recorded are.
UNVERSIONED = 1


class SchemaVersionError(ValueError):
    """Rows or a checkpoint written by a newer prunetune (the message is one line)."""


@dataclass(frozen=True)
class Field:
    """One field: `key` in the code, `name` in the files (default: the key), the JSON types its
    value may have, whether every such row has it, and the names earlier versions used."""

    key: str
    types: tuple[type, ...]
    doc: str
    required: bool = True
    name: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.key)


@dataclass(frozen=True)
class Record:
    """The declared fields of one kind of row or state (`by_key` is what every method here
    reads, so that a test can rename a field in one place)."""

    kind: str
    fields: tuple[Field, ...]
    by_key: dict[str, Field] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {f.key: f for f in self.fields})

    def name(self, key: str) -> str:
        """The on-disk name of field `key` (KeyError for a field not declared)."""
        return self.by_key[key].name

    def row(self, extra: Mapping[str, Any] | None = None, **declared: Any) -> dict[str, Any]:
        """A row (or state) under the on-disk names: `declared` by key, each one declared here
        (else TypeError: a writer cannot drift from the schema unnoticed), then `extra` (tags,
        measurements, what a method carries), whose declared keys are renamed too."""
        unknown = set(declared) - set(self.by_key)
        if unknown:
            raise TypeError(f"{self.kind}: undeclared field(s) {sorted(unknown)} "
                            "(declare them in trainables/schema.py)")
        values = {**declared, **(extra or {})}
        return {self.by_key[key].name if key in self.by_key else key: value
                for key, value in values.items()}

    def get(self, row: Mapping[str, Any], key: str) -> Any:
        """The value of field `key` in `row` as written: under its name, else under the first
        earlier alias that holds one (None when neither does)."""
        spec = self.by_key[key]
        return next((row[name] for name in (spec.name, *spec.aliases)
                     if row.get(name) is not None), None)

    def read(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """`row` as the code reads it: declared fields under their keys (from their name or an
        earlier alias); every other field as it is."""
        out = dict(row)
        for spec in self.by_key.values():
            for candidate in (spec.name, *spec.aliases):
                if candidate in out:
                    value = out.pop(candidate)
                    if spec.key not in out or out[spec.key] is None:
                        out[spec.key] = value
        return out

    def problems(self, row: Mapping[str, Any]) -> list[str]:
        """What is wrong with `row` (as written): a required field missing, or a declared field
        with a value of another type. Empty when it is as declared."""
        found = []
        for spec in self.by_key.values():
            if spec.name not in row:
                if spec.required:
                    found.append(f"{self.kind} row lacks {spec.name!r}")
                continue
            value = row[spec.name]
            if not isinstance(value, spec.types) or (isinstance(value, bool)
                                                      and bool not in spec.types):
                found.append(f"{self.kind} field {spec.name!r} is {type(value).__name__}, "
                             f"not {' or '.join(t.__name__ for t in spec.types)}")
        return found


NUMBER = (float, int)
OPTIONAL_STR = (str, type(None))

EPOCH_ROW = Record("epoch", (
    Field("row_type", (str,), '"epoch"'),
    Field("round", (int,), "the round the epoch belongs to (0: the dense model)"),
    Field("epoch", (int,), "the epoch within its round's schedule, from 0"),
    Field("train_loss", NUMBER, "mean training loss of the epoch"),
    Field("train_acc", NUMBER, "training accuracy of the epoch"),
    Field("val_acc", NUMBER, "validation accuracy after the epoch"),
    Field("lr", NUMBER, "learning rate of the epoch"),
    Field("epoch_time_s", NUMBER, "wall time of the epoch's training steps"),
    Field("images_per_s", NUMBER, "training images per second"),
    Field("sparsity", NUMBER, "of the mask at the epoch's end (sparse phases only)",
          required=False),
))

ROUND_ROW = Record("round", (
    Field("row_type", (str,), '"round"'),
    Field("schema_version", (int,), "this module's SCHEMA_VERSION when the row was written"),
    Field("method", (str,), "the method's registered name"),
    Field("label", (str,), "how analysis names the method's line"),
    Field("level_by", (str,), "how analysis groups its levels"),
    Field("scorer", OPTIONAL_STR, "the scorer, if the method has one", required=False),
    Field("schedule", OPTIONAL_STR, "iterative or oneshot, if the method has one",
          required=False),
    Field("seed", (int,), "the trial's seed"),
    Field("round", (int,), "0: the dense model; a method's pruned rounds from 1"),
    Field("target_sparsity", (float, int, type(None)), "the level the round aimed at"),
    Field("sparsity", NUMBER, "pruned fraction of the prunable weights, counted"),
    Field("params_total", (int,), "nonzero parameters (unprunable ones always count)"),
    Field("params_prunable", (int,), "nonzero prunable parameters"),
    Field("params_total_dense", (int,), "parameters of the unpruned network"),
    Field("params_prunable_dense", (int,), "prunable parameters of the unpruned network"),
    Field("val_acc", NUMBER, "best validation accuracy of the round"),
    Field("test_acc", NUMBER, "test accuracy of the best-validation weights"),
    Field("best_epoch", (int,), "the epoch of those weights"),
    Field("epochs", (int,), "epochs the round ran"),
    Field("round_time_s", NUMBER, "wall time of the round"),
    Field("status", (str,), '"ok" or "diverged"'),
    Field("final_round", (bool,), "whether the trial ends with this round"),
    Field("layer_sparsity", (dict,), "parameter name -> its pruned fraction"),
    Field("round_checkpoint", (str,), "the round checkpoint's directory in the trial's",
          required=False, aliases=("checkpoint_dir_name",)),
))

#: What every checkpoint state records of the trial that wrote it.
_TRIAL_FIELDS = (
    Field("config", (dict,), "the trial's config, in full"),
    Field("recipe_hash", (str,), "what decides the dense model (trainables/identity.py)"),
)

ROUND_STATE = Record("round checkpoint", (
    Field("kind", (str,), '"round"'),
    *_TRIAL_FIELDS,
    Field("round", (int,), "as in the round row"),
    Field("target_sparsity", (float, int, type(None)), "as in the round row"),
    Field("sparsity", NUMBER, "as in the round row"),
    Field("model", (dict,), "the weights the round ended with; absent from a trial's last "
          "pruned round, which keeps only the selected ones", required=False),
    Field("best_model", (dict,), "the best-validation weights (the test accuracy's)"),
    Field("masks", (dict,), "parameter name -> bool mask of its kept weights"),
    Field("layer_sparsity", (dict,), "parameter name -> numel, remaining, sparsity"),
    Field("metrics", (dict,), "the round row"),
))

PROGRESS_STATE = Record("progress checkpoint", (
    Field("kind", (str,), '"progress"'),
    *_TRIAL_FIELDS,
    Field("round", (int,), "the round in progress"),
    Field("target_sparsity", (float, int, type(None)), "the level the round aims at"),
    Field("elapsed_s", NUMBER, "the round's time so far"),
    Field("phase", (dict,), "the training phase's state: weights, optimizer, epochs done"),
    Field("carry", (dict,), "what the method carries between rounds"),
))


def check_version(row: Mapping[str, Any], source: str) -> int:
    """The schema version of a round row (UNVERSIONED without one); SchemaVersionError, one
    line naming `source`, for a version newer than this prunetune reads."""
    version = row.get("schema_version", UNVERSIONED)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{source}: rows of schema version {version}, written by a newer prunetune; this "
            f"one reads versions up to {SCHEMA_VERSION}: upgrade prunetune to read them")
    return version


#: The key of the round row's field naming its round checkpoint.
ROUND_CHECKPOINT = "round_checkpoint"


def row_checkpoint(row: Mapping[str, Any]) -> str | None:
    """The checkpoint directory a round row names, relative to its trial directory (either
    layout); None when it names none."""
    name = ROUND_ROW.get(row, ROUND_CHECKPOINT)
    return name if isinstance(name, str) and name else None


# A tuned sweep's search trial (sweeps/search/stage.py) gets a Ray config of its own: the unit's
# recipe, the sampled values and the search seeds; the search and the analysis read it back.
SEARCH_KEY = "search"
"""The key of the sampled values in a search trial's Ray config (`{"trial": ..., "search":
{field: value}, "seeds": [...], "seed": ...}`)."""
#: Ray's key for a repeated sample's index (ray.tune.search.repeater.TRIAL_INDEX).
TRIAL_INDEX = "__trial_index__"


def search_trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A search trial's TrialConfig dict from its Ray config: the unit's recipe with the
    sampled values (dotted fields) set, at its search seed. Plain dicts: the analysis reads search
    trials through it too."""
    raw = config["trial"]
    for key, value in (config.get(SEARCH_KEY) or {}).items():
        raw = _with_value(raw, key.split("."), value)
    return {**raw, "seed": search_seed(config)}


def _with_value(section: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of `section` with the field at `path` set to `value` (sections on the way
    copied, or made)."""
    head, *rest = path
    inner = _with_value(section.get(head) or {}, rest, value) if rest else value
    return {**section, head: inner}


def search_seed(config: dict[str, Any]) -> int:
    """A search trial's seed from its Ray config: `seed` where the samples were drawn up front,
    else the search seed of its repeat (`Repeater`'s index; 0 without one)."""
    if "seed" in config:
        return int(config["seed"])
    return int(config["seeds"][int(config.get(TRIAL_INDEX, 0))])
