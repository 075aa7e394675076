"""Every Ray internal prunetune relies on is in `trainables.ray_adapter`, and each one is still
where that module reaches for it in the installed Ray: a Ray upgrade that moves one fails here,
by name, instead of resume numbering or an auth check silently doing nothing."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from trainables import ray_adapter

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pruning", "trainables", "sweeps", "analysis")
ADAPTER = REPO / "trainables" / "ray_adapter.py"
#: Ray's documented settings for its users, which prunetune reads and never sets.
USER_SETTINGS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def test_the_installed_ray_is_the_one_the_adapter_was_checked_against() -> None:
    import ray

    assert ray.__version__ == ray_adapter.RAY_VERSION, (
        f"Ray {ray.__version__} is installed; trainables/ray_adapter.py was checked against "
        f"{ray_adapter.RAY_VERSION}: run this file's tests, fix what moved, then update "
        "RAY_VERSION and constraints.txt")
    pinned = (REPO / "constraints.txt").read_text()
    assert f"ray=={ray_adapter.RAY_VERSION}" in pinned.splitlines()


def _private_uses(path: Path) -> list[str]:
    """Ray names with a private part (`ray._x`, `ray.x._y`, `from ray.x import _y`) and Ray
    environment variables (`"RAY_..."`, `"TUNE_..."` string constants) in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ray"):
            names = [node.module or "", *(alias.name for alias in node.names)]
            found += [f"from {node.module} import {alias.name}" for alias in node.names
                      if any(part.startswith("_") for name in names for part in name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            chain = node
            while isinstance(chain, ast.Attribute):
                chain = chain.value
            if isinstance(chain, ast.Name) and chain.id == "ray":
                found.append(ast.unparse(node))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith(("RAY_", "TUNE_")) and node.value.isidentifier()
              and node.value not in USER_SETTINGS):
            found.append(node.value)
    return found


def test_no_module_but_the_adapter_touches_rays_internals_or_sets_its_environment() -> None:
    """RAY_ADDRESS and the RAY_AUTH_* variables are Ray's documented user settings (read, never
    set); everything else Ray-internal is the adapter's."""
    offenders = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if path != ADAPTER and (uses := _private_uses(path)):
                offenders[str(path.relative_to(REPO))] = uses
    assert offenders == {}
    assert _private_uses(ADAPTER)  # the check can see them: the adapter has some


def test_the_trial_storage_is_read_where_the_adapter_reads_it() -> None:
    from ray.train._internal.storage import StorageContext
    from ray.tune.context import TuneContext

    assert callable(TuneContext.get_storage)
    for attribute in ("trial_fs_path", "storage_filesystem"):
        assert attribute in inspect.getsource(StorageContext), attribute


def test_the_driver_side_internals_exist() -> None:
    import ray
    import ray._private.worker
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.experimental import internal_kv
    from ray.tune.experiment import Trial

    assert hasattr(ray._private.worker, "_global_node")
    assert hasattr(internal_kv, "_internal_kv_get")
    assert "max_failures" in inspect.signature(Trial.__init__).parameters
    assert "self.max_failures" in inspect.getsource(Trial.should_recover)
    actor = ray_adapter.wandb_logging_actor_class()
    assert WandbLoggerCallback._logger_actor_cls is actor and callable(actor.run)
    assert ray_adapter.has_auth_token() is not None  # the token loader is there


def test_tune_stops_on_sigusr1_as_on_ctrl_c() -> None:
    import ray.tune.tuner as tuner_module
    from ray.tune.execution import tune_controller

    source = inspect.getsource(tuner_module) + inspect.getsource(tune_controller)
    source += inspect.getsource(__import__("ray.tune.tune", fromlist=["tune"]))
    assert "SIGUSR1" in source


@pytest.mark.parametrize("variable", sorted(ray_adapter.TOGGLES))
def test_every_environment_toggle_is_one_ray_reads(variable: str) -> None:
    """Each variable name occurs in the installed Ray's sources (a renamed toggle would be set
    and then ignored)."""
    import ray

    root = Path(ray.__file__).parent
    name = variable.removeprefix("RAY_") if variable.startswith("RAY_raylet") else variable
    needles = {variable, name}
    searched = [root / "tune", root / "train", root / "air", root / "_private"]
    found = any(any(needle in path.read_text(errors="ignore") for needle in needles)
                for folder in searched for path in folder.rglob("*.py"))
    # The raylet's settings are C++ RayConfig entries (RAY_<name>), listed in its .so/headers.
    if not found and variable.startswith("RAY_raylet"):
        found = any(name.encode() in path.read_bytes()
                    for path in (root / "_raylet.so", root / "core" / "src" / "ray" / "raylet"
                                 / "raylet") if path.is_file())
    assert found, f"{variable} is not read by Ray {ray.__version__}"


def test_environment_puts_back_what_was_there(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("PRUNETUNE_ADAPTER_A", "before")
    monkeypatch.delenv("PRUNETUNE_ADAPTER_B", raising=False)
    with ray_adapter.environment({"PRUNETUNE_ADAPTER_A": "1", "PRUNETUNE_ADAPTER_B": "2"}):
        assert os.environ["PRUNETUNE_ADAPTER_A"] == "1" and os.environ["PRUNETUNE_ADAPTER_B"] == "2"
    assert os.environ["PRUNETUNE_ADAPTER_A"] == "before"
    assert "PRUNETUNE_ADAPTER_B" not in os.environ
