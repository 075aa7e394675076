"""Screenshots of TensorBoard over the quickstart's results, for docs/results-and-checkpoints.md:
what a user sees after `prunetune tensorboard output/quickstart`. `make docs` runs it after
docs/generate.py has rerun the quickstart.

    python docs/tensorboard_screenshot.py [--results output/docs/quickstart]

TensorBoard serves the results on a free loopback port; Debian's `chromium` (apt install
chromium), driven headless (docs/headless_chromium.py), draws each view into
docs/tensorboard_<view>.png; the block between
`<!-- docs:tensorboard:start -->` and `<!-- docs:tensorboard:end -->` links them, with what the
results hold and which commit produced them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))

from docs.generate import PROVENANCE_FILE, DocsError, markers  # noqa: E402
from docs.headless_chromium import BrowserError, Chromium, find_chromium  # noqa: E402

PAGE = REPO / "docs" / "results-and-checkpoints.md"
SECTION = "tensorboard"


@dataclass(frozen=True)
class View:
    """One screenshot: a dashboard (TensorBoard's URL hash), the tab to click in it, if any,
    and what it shows."""

    name: str
    dashboard: str
    caption: str
    tab: str | None = None


VIEWS = (
    View("custom_scalars", "custom_scalars&_smoothingWeight=0&_ignoreYOutliers=false",
         "Custom Scalars: test accuracy against sparsity (the step is the sparsity in basis "
         "points), and per round, every trial a line"),
    View("hparams", "hparams", "HParams, parallel coordinates: one session per trial, the "
         "fields the sweep varies against its final round's accuracy, sparsity, parameters and "
         "speedup", tab="parallel coordinates view"),
)
#: Seconds a dashboard is given to load and draw, and a clicked tab to draw.
LOAD_S, TAB_S = 10.0, 4.0


def wait_for_runs(url: str, expected: int, timeout_s: float = 120.0) -> None:
    """Until TensorBoard lists `expected` runs (it reads the event files in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(url + "data/runs", timeout=30) as response:
            runs = json.loads(response.read())
        if len(runs) >= expected:
            return
        if time.monotonic() > deadline:
            raise DocsError(f"TensorBoard listed {len(runs)} of {expected} runs after "
                            f"{timeout_s:.0f} s")
        time.sleep(1.0)


def screenshot(url: str, view: View, target: Path) -> None:
    try:
        with Chromium() as browser:
            browser.open(f"{url}?darkMode=false#{view.dashboard}")
            time.sleep(LOAD_S)
            if view.tab is not None:
                if not browser.click_text(view.tab):
                    raise DocsError(f"no {view.tab!r} tab on TensorBoard's {view.name} page")
                time.sleep(TAB_S)
            browser.screenshot(target)
    except BrowserError as error:
        raise DocsError(f"{target.name}: {error}") from None


def trial_count(experiment: Path) -> int:
    return len(list(experiment.glob("*/params.json")))


def block(experiment: Path, info: dict, chromium_version: str, tensorboard_version: str) -> str:
    trials = trial_count(experiment)
    start, end = markers(SECTION)
    lines = [start]
    for view in VIEWS:
        lines += [f"![TensorBoard {view.caption}](tensorboard_{view.name}.png)", "",
                  f"*{view.caption}.*", ""]
    code = f"commit `{info['commit']}`" + (" plus uncommitted changes"
                                           if info["uncommitted_changes"] else "")
    lines.append(
        f"Taken by `make docs` (`docs/tensorboard_screenshot.py`) in headless {chromium_version}"
        f" and TensorBoard {tensorboard_version} over the results of `{info['sweep']}` ({code}): "
        f"{trials} trials.")
    lines.append(end)
    return "\n".join(lines)


def splice(text: str, new_block: str) -> str:
    start, end = markers(SECTION)
    if text.count(start) != 1 or text.count(end) != 1:
        raise DocsError(f"{PAGE.name} needs exactly one {start} ... {end} pair")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + new_block + after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/tensorboard_screenshot.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "output" / "docs" / "quickstart")
    args = parser.parse_args(argv)
    try:
        info_path = args.results / PROVENANCE_FILE
        if not info_path.is_file():
            raise DocsError(f"{info_path} is missing: the quickstart's results come from "
                            "`python docs/generate.py --only quickstart` (make docs)")
        info = json.loads(info_path.read_text())
        version = subprocess.run([find_chromium(), "--version"], capture_output=True, text=True)
        import tensorboard

        from sweeps.tensorboard_view import launch

        url = launch(args.results, "0", "localhost")
        wait_for_runs(url, trial_count(args.results))
        for view in VIEWS:
            target = REPO / "docs" / f"tensorboard_{view.name}.png"
            screenshot(url, view, target)
            print(f"docs: wrote {target.relative_to(REPO)}")
        chromium_version = " ".join(version.stdout.split()[:2]) or "Chromium"
        text = splice(PAGE.read_text(encoding="utf-8"), block(
            args.results, info, chromium_version, tensorboard.__version__))
        PAGE.write_text(text, encoding="utf-8")
        print(f"docs: {PAGE.relative_to(REPO)} links them")
        return 0
    except (DocsError, BrowserError) as error:
        print(f"docs: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
