"""Before `ray.init(address=...)`: does a Ray head answer there, and will it take our token?

Ray 2.60 authenticates with a shared token. `ray start --head` turns token authentication on
whenever the head has a token (`ray get-auth-token --generate` makes one; any local
`ray.init()` leaves one in ~/.ray/auth_token). A driver or node that joins by an explicit
address must then set RAY_AUTH_MODE=token itself and hold the same token, in RAY_AUTH_TOKEN,
a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (that order). Without them, Ray
retries for ~20 s and ends in a traceback; a missing token file even aborts the process. These
checks turn each case into one line that says what to set, within a second.

They use Ray's token loader and a bare GCS client (`trainables.ray_adapter`); on a Ray without
them, the checks step aside and `ray.init`'s own errors are reported instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from trainables.errors import PrunetuneError
from trainables.ray_adapter import has_auth_token, open_gcs_client

TOKEN_HINT = ("the head's token (`ray get-auth-token` on the head prints it) in RAY_AUTH_TOKEN, "
              "in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")


class ClusterAccessError(PrunetuneError):
    """The cluster cannot be reached or refuses this driver; the message says what to set."""


def split_host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a `host:port` GCS address; None for `auto`, `ray://...` and the like."""
    if "://" in address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [ipv6]:port
    return (host, int(port)) if port.isdigit() and host else None


def check_token_configured() -> None:
    """With RAY_AUTH_MODE=token, a token must be found (Ray aborts the process otherwise)."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and not os.environ.get("RAY_AUTH_TOKEN"):
        try:
            readable = bool(Path(path).read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            readable = False
        if not readable:
            raise ClusterAccessError(
                f"RAY_AUTH_TOKEN_PATH={path} cannot be read or is empty: point it at a file "
                "holding the head's token (`ray get-auth-token` on the head prints it)"
            )
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return
    if has_auth_token() is False:  # None: a Ray without the loader; ray.init reports
        raise ClusterAccessError(f"RAY_AUTH_MODE=token but no token was found: put {TOKEN_HINT}")


def check_reachable(host: str, port: int, timeout_s: float = 5.0) -> None:
    """A TCP connection to the head's GCS port, instead of Ray's ~40 s of retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as error:
        reason = error.strerror or type(error).__name__
    raise ClusterAccessError(
        f"no Ray head answers at {host}:{port} ({reason}): start one there with "
        f"`ray start --head --port={port}`, or pass the right --address (or RAY_ADDRESS)"
    )


def check_token_accepted(address: str) -> None:
    """One GCS request with this process's auth settings; refused -> what to set."""
    from ray.exceptions import AuthenticationError

    try:
        with _quiet_stderr():  # Ray's C++ client logs each refusal as a line of its own
            open_gcs_client(address)
    except AuthenticationError:
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            raise ClusterAccessError(
                f"the Ray cluster at {address} refused this driver's token: use {TOKEN_HINT}"
            ) from None
        raise ClusterAccessError(
            f"the Ray cluster at {address} requires token authentication: set "
            f"RAY_AUTH_MODE=token and put {TOKEN_HINT}"
        ) from None
    except Exception:  # anything else (an old head, a timeout): ray.init reports it
        return


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ logging writes there directly, not via sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_cluster_access(address: str) -> None:
    """Everything that can be checked about `address` before `ray.init` connects to it."""
    check_token_configured()
    target = split_host_port(address)
    if target is None:
        return
    check_reachable(*target)
    check_token_accepted(address)


def connection_failure(error: BaseException, address: str) -> ClusterAccessError | None:
    """A one-line error for a failed `ray.init(address=...)`, or None if it is not one."""
    from ray.exceptions import AuthenticationError

    text = str(error)
    # Ray wraps a refused token in "RuntimeError: Failed to connect to GCS ... InvalidAuthToken".
    if isinstance(error, AuthenticationError) or "InvalidAuthToken" in text:
        return ClusterAccessError(
            f"the Ray cluster at {address} refused this driver: set RAY_AUTH_MODE=token and "
            f"put {TOKEN_HINT}"
        )
    if isinstance(error, ConnectionError) or "Failed to connect to GCS" in text:
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        return ClusterAccessError(f"cannot connect to the Ray cluster at {address}: {first}")
    return None
