"""One trial's configuration: typed, validated pydantic models loaded from YAML.

Every field has a default, so an empty file is a valid (dense, digits) run. Unknown keys, wrong
types, out-of-range values, unknown registry names and fields the trial's method would ignore
are refused at load time with a `ConfigError` whose one line names the field path and what would
be accepted.

sections.py   the shared sections (data, model, train, prune, dense_model, measure), MethodSection
trial.py      TrialConfig: the shared sections + the method's own, shapes only
written.py    one layer of a config checked as written, field by field
messages.py   one line per problem: did-you-mean, renamed keys, pydantic errors
files.py      YAML files and dotted overrides

Nothing here imports a registry (methods, datasets, models): `trainables.resolve`, above this
package and the registries, looks the names up, validates the method's section and applies its
rules. Read configs through `trainables.resolve.parse_trial_config` / `load_trial_config`.
"""

from trainables.config.files import apply_overrides, read_yaml
from trainables.config.messages import (
    MOVED_KEYS,
    SectionError,
    did_you_mean,
    fields_at,
    format_error_detail,
    format_validation_error,
    moved_key_message,
)
from trainables.config.sections import (
    DataConfig,
    DenseModelConfig,
    MeasureConfig,
    MethodSection,
    ModelConfig,
    PruneConfig,
    TrainConfig,
    names_in,
)
from trainables.config.trial import TrialConfig, set_fields, validate_section
from trainables.config.written import check_layer_fields

__all__ = [
    "MOVED_KEYS",
    "DataConfig",
    "DenseModelConfig",
    "MeasureConfig",
    "MethodSection",
    "ModelConfig",
    "PruneConfig",
    "SectionError",
    "TrainConfig",
    "TrialConfig",
    "apply_overrides",
    "check_layer_fields",
    "did_you_mean",
    "fields_at",
    "format_error_detail",
    "format_validation_error",
    "moved_key_message",
    "names_in",
    "read_yaml",
    "set_fields",
    "validate_section",
]
