"""One trial's configuration: typed, validated pydantic models loaded from YAML.

Every field has a default, so an empty file is a valid (dense, digits) run. Unknown keys, wrong
types, out-of-range values, unknown registry names and fields the trial's method would ignore
are refused at load time with a `ConfigError` whose one line names the field path and what would
be accepted.

sections.py   the shared sections (data, model, train, prune, dense_model, measure), MethodSection
trial.py      TrialConfig (shared sections + the method's own), parse_trial_config, ignored fields
written.py    one layer of a config checked as written, field by field
messages.py   one line per problem: did-you-mean, renamed keys, pydantic errors
files.py      YAML files and dotted overrides
"""

from trainables.config.files import apply_overrides, load_trial_config, read_yaml
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
)
from trainables.config.trial import (
    TrialConfig,
    ignored_field_message,
    ignored_fields,
    parse_trial_config,
    set_fields,
    validate_section,
)
from trainables.config.written import check_written_fields

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
    "check_written_fields",
    "did_you_mean",
    "fields_at",
    "format_error_detail",
    "format_validation_error",
    "ignored_field_message",
    "ignored_fields",
    "load_trial_config",
    "moved_key_message",
    "parse_trial_config",
    "read_yaml",
    "set_fields",
    "validate_section",
]
