"""The method protocol: everything the rest of prunetune needs to know about a pruning method.

A method is one class in one module of this package, registered with `@register_method`. The
config validator, the sweep planner, the trial namer and the result rows ask the method; none of
them names a method. Every member except `name`, `label` and `run` has a default, so a new method
overrides only what differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pruning.allocation import ALLOCATIONS
from pruning.registry import Registry
from trainables.config import MethodSection, SectionError, TrialConfig
from trainables.errors import ConfigError

if TYPE_CHECKING:
    from trainables.methods.context import TrialContext

# Fields of the shared `prune` section that decide what is prunable: every method reads them
# (they define the parameter counts of its rows, even for dense).
PRUNABLE_FIELDS = frozenset({"prune.exclude_first_conv", "prune.exclude_classifier"})


class Method:
    """Base class of a pruning method (see the module docstring)."""

    # Class attributes (an instance may set its own, as one class serving a family does).
    name: str
    """The `method:` value in configs and the key of its own section."""
    label: str
    """How figures and tables call it."""
    section: type[MethodSection] | None = None
    """Its own settings (a pydantic model with defaults and descriptions), or None."""
    sweep_order: int = 50
    """Position in a sweep: lower runs first (dense 0, so the shared dense model is ready)."""
    prune_fields: frozenset[str] = frozenset()
    """The `prune.*` fields it reads besides what is prunable (see `reads`)."""
    default_allocation: str = "global"
    """`prune.allocation` when the config leaves it None."""
    allocations: frozenset[str] | None = None
    """The `prune.allocation` values it supports; None = every registered allocation (plug-ins
    included) but `excluded_allocations`."""
    excluded_allocations: frozenset[str] = frozenset({"lamp"})
    """Registered allocations that do not apply to it: LAMP rescales magnitudes, so only
    methods that prune by magnitude take it."""

    # ---- what it needs ------------------------------------------------------------------

    def starts_from_dense(self, config: TrialConfig) -> bool:
        """True if round 0 is the shared dense model (then `dense_model.*` applies)."""
        return False

    def dense_epochs(self, config: TrialConfig) -> set[int]:
        """Epochs of the dense run, besides the initial weights, that it rewinds to."""
        return set()

    def final_target(self, config: TrialConfig) -> float | None:
        """The sparsity its last round aims at (what TensorBoard's HParams compares trials at):
        `prune.target_sparsity` where it reads that, else None (unknown before it runs)."""
        if "prune.target_sparsity" in self.reads(config):
            return config.prune.target_sparsity
        return None

    def reads(self, config: TrialConfig) -> set[str]:
        """Dotted fields of `prune`, `dense_model` and its own section that it uses (`x.*` for
        a whole section). A field outside this set, when set, is refused as ignored."""
        fields = set(PRUNABLE_FIELDS | self.prune_fields)
        if self.section is not None:
            fields.add(f"{self.name}.*")
        if self.starts_from_dense(config):
            fields.add("dense_model.*")
        return fields

    def mode_note(self, config: TrialConfig) -> str:
        """Extra words for 'X is ignored by method M...' (e.g. ' with imp.schedule: oneshot')."""
        return ""

    def supported_allocations(self) -> list[str]:
        """The registered allocations `prune.allocation` may name for it, sorted."""
        names = ALLOCATIONS.names() if self.allocations is None else sorted(self.allocations)
        return [name for name in names if name not in self.excluded_allocations]

    def validate(self, config: TrialConfig) -> None:
        """Rules across fields; raise SectionError with the whole one-line message."""
        allocation = config.prune.allocation
        if allocation is None:
            return
        if allocation not in ALLOCATIONS:
            raise SectionError(
                f"config field 'prune.allocation': {ALLOCATIONS.unknown_message(allocation)}")
        supported = self.supported_allocations()
        if allocation not in supported:
            raise SectionError(
                f"config field 'prune.allocation': {allocation!r} does not apply to method "
                f"{self.name}; one of: {', '.join(supported) or 'none'}"
            )

    def allocation(self, config: TrialConfig) -> str:
        return config.prune.allocation or self.default_allocation

    # ---- how sweeps and results show it -------------------------------------------------

    def name_parts(self, config: TrialConfig) -> list[str]:
        """Parts of its trial and TensorBoard name after the label and seed."""
        if config.prune.pattern is not None:  # an N:M pattern replaces the target
            return [config.prune.pattern.replace(":", "of")]
        return [f"sp{config.prune.target_sparsity:g}"]

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        """Fields every round row carries so that analysis can group and name its lines without
        knowing the method: `label`, `level_by` (`target_sparsity`, or `round` for a method
        whose rounds are its sparsity levels), `schedule` and `scorer` (None where n/a)."""
        return {"label": self.label, "level_by": "target_sparsity", "schedule": None,
                "scorer": None}

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        """Settings of its own section that `--smoke` shrinks (dotted path -> value)."""
        return {}

    def smoke_epochs(self, config: TrialConfig) -> int:
        """The fewest epochs a `--smoke` run needs (e.g. to reach a rewind point)."""
        return 1

    def training_epochs(self, config: TrialConfig) -> int:
        """Epochs of training a trial runs in all, its dense round included: the budget a
        budget-matched dense control trains for (`controls: [budget_matched_dense]`)."""
        return config.train.epochs

    def round_checkpoints(self, config: TrialConfig) -> int:
        """How many rounds (each a row and a checkpoint) a trial reports: by default its dense
        round 0 if it starts from the dense model, then one pruned round. What a sweep still
        needs on disk is estimated from it."""
        return int(self.starts_from_dense(config)) + 1

    # ---- what it does -------------------------------------------------------------------

    def run(self, context: TrialContext) -> None:
        """Run (or continue, from the trial's latest checkpoint) the whole trial."""
        raise NotImplementedError


METHODS: Registry[Method] = Registry("method", error=ConfigError)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register one instance of `cls` under `cls.name`."""
    METHODS.register(cls.name)(cls())
    return cls
