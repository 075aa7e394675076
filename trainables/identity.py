"""Identities derived from the config schema: which values make two runs the same run.

Each config field's role (`EXECUTION` or `BATCHES` in its `json_schema_extra`; none: the field
decides the result) says which identities include it. Only values that differ from the field's
default are included, as open_lth's hashnames do: a new field whose default keeps today's
behaviour leaves every existing hash, dense cache and trial key valid.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

RESULT, EXECUTION_ROLE, BATCHES_ROLE = "result", "execution", "batches"
#: `json_schema_extra` of a field that decides only how a result is computed (where files live,
#: how data is fed, devices, measurement): in no identity.
EXECUTION = {"role": EXECUTION_ROLE}
#: ... of a field that changes the training batches but not the decoded images (augmentation):
#: in the trial and recipe identities, not in the decoded data's.
BATCHES = {"role": BATCHES_ROLE}


def field_role(model: type[BaseModel], name: str) -> str:
    """`execution`, `batches` or `result` (a field without a role decides the result)."""
    extra = model.model_fields[name].json_schema_extra
    return extra.get("role", RESULT) if isinstance(extra, dict) else RESULT


def identity_values(section: BaseModel, leave_out: frozenset[str] = frozenset({EXECUTION_ROLE})
                    ) -> dict[str, Any]:
    """The fields of `section` whose role is not in `leave_out` and whose value is not the
    default, as JSON values; sub-sections recursively (left out when all default)."""
    values: dict[str, Any] = {}
    model = type(section)
    for name, info in model.model_fields.items():
        if field_role(model, name) in leave_out:
            continue
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            nested = identity_values(value, leave_out)
            if nested:
                values[name] = nested
        elif value != info.get_default(call_default_factory=True):
            values[name] = _json(value)
    for name, value in (section.__pydantic_extra__ or {}).items():  # a trial's method section
        nested = identity_values(value, leave_out) if isinstance(value, BaseModel) else value
        if nested:
            values[name] = nested
    return values


def digest(values: dict[str, Any], length: int = 16) -> str:
    """A short, stable hash of JSON-able `values`."""
    text = json.dumps(values, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def trial_key(config: BaseModel) -> str:
    """A trial config's identity: the non-default values of the fields that decide its result,
    so configs that differ only in how they run (paths, devices, measurement) share a key."""
    return json.dumps(identity_values(config), sort_keys=True)
