"""Tiny random-initialised stand-ins for the foundation models, built locally from configs (never downloaded).

A model reference ``tiny:<name>`` in a config is materialised once into ``<cache_dir>/<name>`` and then loaded
by the *same* code path as a real Hugging Face id or open_clip name (``from_pretrained(folder)`` etc.).
Each builder module exposes ``build(out_dir: Path) -> None`` which saves a complete model folder.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path

TINY_PREFIX = "tiny:"

#: tiny model name -> module whose ``build(out_dir)`` writes it.
BUILDERS = {
    "llava": "fairweather.tiny.llava",
    "clip": "fairweather.tiny.clip",
    "depth-anything": "fairweather.tiny.depth",
}


def is_tiny(ref: str) -> bool:
    return ref.startswith(TINY_PREFIX)


def resolve_model_ref(ref: str, cache_dir: str | Path) -> str:
    """Return a loadable reference: ``tiny:<name>`` -> a local folder (built on first use); anything else unchanged."""
    if not is_tiny(ref):
        return ref
    name = ref[len(TINY_PREFIX) :]
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny model {ref!r} (known: {', '.join('tiny:' + n for n in BUILDERS)})")
    target = Path(cache_dir).expanduser().resolve() / name
    if not (target / ".complete").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build into a temporary sibling and rename, so a crash never leaves a half-written model folder.
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            importlib.import_module(BUILDERS[name]).build(staging)
            (staging / ".complete").write_text(ref + "\n")
            if target.exists() and not (target / ".complete").exists():
                shutil.rmtree(target)  # left over by a crashed build
            staging.rename(target)
        except OSError:
            # Another process (e.g. a second Ray actor) finished the same build first: use its folder.
            if not (target / ".complete").exists():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)
