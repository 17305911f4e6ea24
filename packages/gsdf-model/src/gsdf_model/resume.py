"""Whether a run directory's checkpoint may be continued by the run asked for now.

Resuming continues a run: the same preset, the same network and the same data. A checkpoint
of another preset or network would otherwise fail deep inside ``load_state_dict`` (a size
mismatch dump per tensor) or, where the shapes happen to fit, continue silently on other
data. Each difference is one line naming it, and ``--restart`` (``resume=False``) starts
over in that directory on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gsdf_model.runtime import UserError, config_to_dict

RESTART = "--restart to start over, or another --out"


def _plain(value: Any) -> Any:
    """A value as JSON sees it (tuples and lists alike), for comparing configurations."""
    return json.loads(json.dumps(value, default=str))


def check_resume(
    ckpt: dict[str, Any], path: str | Path, preset: str, model_cfg: Any, fingerprint: str | None
) -> None:
    """UserError (one line) when checkpoint ``ckpt`` read from ``path`` was trained with
    another preset, another model configuration, or on other data (``fingerprint``: the
    shard set's, None when the dataset has none)."""
    old = ckpt.get("model_preset")
    if old != preset:
        raise UserError(f"{path} was trained with preset {old!r}, not {preset!r}; {RESTART}")
    have, want = _plain(ckpt.get("model_config")), _plain(config_to_dict(model_cfg))
    if have != want:
        keys = sorted(k for k in set(have or {}) | set(want) if (have or {}).get(k) != want.get(k))
        shown = ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")
        raise UserError(f"{path} holds another model configuration ({shown}); {RESTART}")
    old_data = ckpt.get("data_fingerprint")
    if old_data and fingerprint and old_data != fingerprint:
        raise UserError(
            f"{path} was trained on other data (shard set {old_data}, now {fingerprint}); {RESTART}"
        )


def load_weights(net: Any, ckpt: dict[str, Any], path: str | Path) -> None:
    """The checkpoint's weights into ``net``; a UserError (first line of the reason) when
    they do not fit it, instead of torch's per-tensor dump."""
    try:
        net.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: weights do not fit this network ({first}); {RESTART}") from None
