"""Plug-ins: methods, datasets, models, scorers, allocations and channel criteria from the
user's own code.

A plug-in is a Python module that registers what it defines when it is imported
(`@register_method`, `@register_dataset(...)`, `@register_model(...)`,
`@pruning.SCORERS.register(...)`, `@pruning.ALLOCATIONS.register(...)`,
`@pruning.CRITERIA.register(...)`). Two ways bring one in,
and both are imported before any name is looked up, in the driver and in every trial's worker:

- a sweep file's `plugins:` list: dotted module names (`mypkg.mymethods`, found on the Python
  path, in the sweep file's folder or in the folder run_sweep was started from) or Python files
  (`./local_method.py`, relative to the sweep file);
- installed packages' entry points in the groups of `ENTRY_POINT_GROUPS`, each naming a module:
  `[project.entry-points."prunetune.methods"] mine = "mypkg.mymethods"`.

A plug-in that fails to import is a `PluginError` whose one line names it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trainables.errors import PrunetuneError

ENTRY_POINT_GROUPS = ("prunetune.methods", "prunetune.datasets", "prunetune.models",
                      "prunetune.scorers", "prunetune.allocations", "prunetune.criteria")
# Modules imported as plug-ins in this process: every worker imports them itself.
_PLUGIN_MODULES: set[str] = set()


class PluginError(PrunetuneError):
    """A plug-in module is missing or raised while it was imported."""


@dataclass(frozen=True)
class Plugin:
    """One plug-in, resolved on the driver so that every worker imports exactly the same module.

    `module` is the name it is imported under; `file` the Python file it is loaded from (None: a
    module found on `search_path` or the Python path). `written` is the entry as the sweep file
    has it, for messages.
    """

    written: str
    module: str
    file: str | None = None
    search_path: tuple[str, ...] = ()


def _is_file(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def _file_module_name(path: Path) -> str:
    # Stable across processes (the workers import the same file under the same name), distinct
    # for two files of the same name in different folders, and never shadowing a real module.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"prunetune_plugin_{stem}_{digest}"


def resolve_plugins(entries: Iterable[str], sweep_dir: Path, launch_dir: Path) -> list[Plugin]:
    """The sweep file's `plugins:` entries as `Plugin`s with absolute paths; PluginError for a
    file that does not exist."""
    plugins = []
    for entry in entries:
        if _is_file(entry):
            path = (sweep_dir / entry).expanduser().resolve()
            if not path.is_file():
                raise PluginError(f"plugin {entry!r}: no such file {path}")
            plugins.append(Plugin(entry, _file_module_name(path), str(path)))
        else:
            search = tuple(dict.fromkeys(str(p.resolve()) for p in (sweep_dir, launch_dir)))
            plugins.append(Plugin(entry, entry, None, search))
    return plugins


def import_plugins(plugins: Iterable[Plugin]) -> None:
    """Import every plug-in (a module already imported is not run again); PluginError naming
    the first that fails."""
    for plugin in plugins:
        _PLUGIN_MODULES.add(plugin.module)
        if plugin.module in sys.modules:
            continue
        try:
            if plugin.file is not None:
                _import_file(plugin.module, Path(plugin.file))
            else:
                for folder in plugin.search_path:
                    if folder not in sys.path:
                        sys.path.append(folder)  # after the installed packages: never shadows
                importlib.import_module(plugin.module)
        except Exception as error:
            raise PluginError(
                f"plugin {plugin.written!r} failed to import: {_one_line(error)}"
            ) from error


def _import_file(module_name: str, path: Path) -> None:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise


_INSTALLED_LOADED = False


def load_installed_plugins() -> None:
    """Import the modules installed packages declare in `ENTRY_POINT_GROUPS`, once per process;
    PluginError naming the entry point and its package if one fails."""
    global _INSTALLED_LOADED
    if _INSTALLED_LOADED:
        return
    for group in ENTRY_POINT_GROUPS:
        for entry_point in importlib.metadata.entry_points(group=group):
            _PLUGIN_MODULES.add(entry_point.module)
            try:
                entry_point.load()
            except Exception as error:
                package = entry_point.dist.name if entry_point.dist is not None else "?"
                raise PluginError(
                    f"plugin entry point {entry_point.name!r} = {entry_point.value!r} (group "
                    f"{group}, package {package}) failed to import: {_one_line(error)}"
                ) from error
    _INSTALLED_LOADED = True


def is_plugin_module(module: str) -> bool:
    """Whether `module` was imported as a plug-in here (or is inside one that was), so that
    every worker imports it too."""
    return any(module == name or module.startswith(f"{name}.") for name in _PLUGIN_MODULES)


def import_submodules(package: str, path: Iterable[str], skip: Iterable[str] = ()) -> None:
    """Import every module of `package` (whose `__path__` is `path`) except `skip`: what makes a
    built-in method, dataset or model one file that registers itself."""
    skipped = set(skip)
    for module in pkgutil.iter_modules(path):
        if module.name not in skipped:
            importlib.import_module(f"{package}.{module.name}")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text}"
