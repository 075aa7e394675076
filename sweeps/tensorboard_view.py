"""`prunetune tensorboard DIR`: TensorBoard on an experiment (or a folder of experiments),
started in this process; prints the address and serves until Ctrl-C.

    prunetune tensorboard output/quickstart              # http://localhost:6006/ (or the next free)
    prunetune tensorboard output --port 0                # a free port the system picks
    prunetune tensorboard output/quickstart --host 0.0.0.0   # reachable from other machines
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.errors import ConfigError  # noqa: E402

EXIT_BAD_INPUT = 2
EVENTS = "events.out.tfevents.*"


def parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Start TensorBoard on an experiment directory (or its parent).")
    parser.add_argument("directory", type=Path, help="an experiment directory, or a folder of them")
    parser.add_argument("--port", default="default",
                        help="port to serve on; 0: a free one; default: 6006 or the next free")
    parser.add_argument("--host", default="localhost",
                        help="address to listen on (default: localhost; 0.0.0.0 for all)")
    return parser.parse_args(argv)


def check_directory(directory: Path) -> None:
    """ConfigError (one line) unless `directory` exists and holds TensorBoard events."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such directory")
    if next(directory.rglob(EVENTS), None) is None:
        raise ConfigError(f"{directory}: no TensorBoard events in it (is it an experiment "
                          "directory from `prunetune run`, with `tensorboard` among its loggers?)")


def launch(directory: Path, port: str, host: str) -> str:
    """Start TensorBoard's server on a background thread; its URL."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(logdir=str(directory), port=port if port == "default" else int(port),
                    host=host)
    return board.launch()


def main(argv: list[str] | None = None, prog: str = "prunetune tensorboard") -> int:
    args = parse_args(argv, prog)
    try:
        check_directory(args.directory)
        if args.port != "default" and not args.port.isdigit():
            raise ConfigError(f"--port {args.port}: a port number, 0, or default")
    except ConfigError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    url = launch(args.directory, args.port, args.host)
    print(f"TensorBoard on {args.directory} at {url}  (Ctrl-C stops it)", flush=True)
    print("  Time Series: train/, val/ per epoch, round/ per round, sparsity/test_acc against "
          "sparsity; Custom Scalars: the charts a pruning study opens first; HParams: one "
          "session per trial, methods compared", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python sweeps/tensorboard_view.py"))
