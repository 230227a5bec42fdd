# SPDX-License-Identifier: Apache-2.0
"""Whether the sweep's tracking server or database answers, checked before anything runs.

MLflow's own client retries an unreachable server for minutes; this is one line within seconds, at
the dry run and at the run. Without MLflow (its import is over a second of every ``haloae sweep``
command, and a dry run writes nothing to it): a socket or an http(s) ``/health`` request.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request

from haloae.errors import InputError

SERVER_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}  # default per scheme
CONNECT_TIMEOUT_S = 5.0


class TrackingUnreachableError(InputError):
    """The tracking server or database does not answer."""


def check_reachable(tracking_uri: str, where: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A tracking server or database that does not answer is one line within ``timeout``, before
    anything runs (MLflow's own client retries for minutes). An http(s) server must answer its
    ``/health`` (401/403: it is there, behind authentication); a database must accept a connection.
    Local stores are not checked."""
    parts = urllib.parse.urlsplit(tracking_uri)
    scheme = parts.scheme.split("+")[0]  # postgresql+psycopg2 -> postgresql
    if scheme not in SERVER_PORTS or not parts.hostname:
        return
    port = parts.port or SERVER_PORTS[scheme]
    shown = f"{where}: mlflow.tracking_uri: {scheme}://{parts.hostname}:{port}"  # never the password of the URI
    try:
        if scheme in ("http", "https"):
            health = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/health", "", ""))
            urllib.request.urlopen(health, timeout=timeout).close()  # noqa: S310 - http(s) only, checked above
        else:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code not in (401, 403):
            raise TrackingUnreachableError(
                f"{shown} answers HTTP {exc.code} on /health: is it an MLflow tracking server?"
            ) from None
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise TrackingUnreachableError(
            f"{shown} does not answer ({reason}); start the tracking server or correct the URI"
        ) from None
