"""Mask credentials before a value is logged, printed or recorded: the one place that decides what is secret.

Two kinds of secrets reach configs and logs: values of keys that name a credential (``token``, ``password``,
``secret``, ``api_key`` ...), and credentials inside URIs (``https://user:pass@host``, ``?token=...``,
``X-Amz-Signature=...``). :func:`redact` masks both in nested config data (dicts, lists, strings), keeping everything
else unchanged, so a masked config still shows which server and which bucket a run used.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

#: Words of a key's last dotted part (split on ``_``, ``-``, ``.``) that mark its value as a credential. Whole words
#: only: ``vlm.max_new_tokens`` and ``model.clip_prior.prior_tokens`` are counts, not tokens.
_SECRET_WORDS = frozenset(
    {
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "credential",
        "credentials",
        "auth",
        "apikey",
        "passphrase",
    }
)
#: Two-word key endings that are credentials (``api_key``, ``access_key``, ``private_key``, ``secret_key``).
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("sas", "key")}
)

#: ``scheme://userinfo@`` -> ``scheme://***@`` (user names can be secrets too, e.g. a token used as the user).
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/@\s?#]+)@")
#: Query parameters that carry credentials in presigned/tokened URLs (S3, GCS, Azure SAS, generic). ``key`` only as
#: a whole word (``key``, ``api_key``, ``X-Api-Key``): MLflow's ``viewStateShareKey`` names a saved view, not a secret.
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&](?:[a-z0-9_\-]*(?:token|password|secret|signature|credential|apikey)|(?:[a-z0-9]+[_\-])*key|sig))="
    r"(?P<value>[^&#\s]+)",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    """True when a (dotted) config key names a credential: its last part has a secret word."""
    words = [w for w in re.split(r"[_\-.]", key.rsplit(".", 1)[-1].lower()) if w]
    return any(w in _SECRET_WORDS for w in words) or any(
        pair in _SECRET_PAIRS for pair in itertools.pairwise(words)
    )


def redact_text(text: str) -> str:
    """Mask the credentials inside URIs of ``text`` (userinfo and credential query parameters)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}={MASK}", text)


def redact(value: Any, key: str = "") -> Any:
    """``value`` with credentials masked: whole values under secret keys, URI credentials in every string.

    Mappings and lists are walked (a mapping's keys give the context of their values); other types pass unchanged.
    ``None`` or ``""`` under a secret key stays as it is (nothing to hide, and it shows the secret is unset).
    """
    if isinstance(value, Mapping):
        return {k: redact(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, key) for v in value)
    if key and is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    return value
