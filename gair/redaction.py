"""Keep credentials out of everything the project prints, logs or stores.

- :func:`strip_credentials`: ``https://user:pw@host/x`` -> ``https://host/x``.
- :func:`split_credentials`: the same URI without its ``user:password``, and the pair.
- :func:`redact_text`: any text with the given secrets, and every ``user:password@`` part
  of a URL inside it, replaced by ``***``.
- :func:`known_secrets`: the secret values of this process's environment (S3 and MLflow
  credentials), to pass to :func:`redact_text`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "***"
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_MIN_SECRET_CHARS = 4  # shorter values would blank out ordinary words


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without user:password, user, password)``; user/password are None when absent."""
    try:
        parts = urlsplit(uri)
        username, password = parts.username, parts.password
    except ValueError:
        return uri, None, None
    if username is None and password is None:
        return uri, None, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return (
        clean,
        unquote(username) if username is not None else None,
        unquote(password) if password is not None else None,
    )


def strip_credentials(uri: str) -> str:
    """``https://user:pw@host/x`` -> ``https://host/x`` (safe to print or log)."""
    return split_credentials(uri)[0]


def known_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """Secret values set in the environment (``SECRET_ENV``), longest first."""
    env = os.environ if environ is None else environ
    values = {env[k] for k in SECRET_ENV if len(env.get(k, "")) >= _MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every ``scheme://user:password@`` reduced to ``scheme://***@`` and every
    value of ``secrets`` (and its URL-quoted form) replaced by ``***``."""
    out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    from urllib.parse import quote

    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True):
        out = out.replace(secret, REDACTED)
        quoted = quote(secret, safe="")
        if quoted != secret:
            out = out.replace(quoted, REDACTED)
    return out
