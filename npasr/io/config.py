"""Interpolations in saved OmegaConf configs (`feat_in: ${encoder.d_model}`), resolved without
omegaconf: GigaAM's pickled hydra cfg and NeMo's model_config.yaml both store them unresolved."""

from __future__ import annotations

import re
from typing import Any

_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")  # a whole-value `${key.path}`


def resolve_interpolations(cfg: Any, root: Any = None, _depth: int = 0, *,
                           root_names: tuple[str, ...] = ()) -> Any:  # fmt: skip
    """Replace node interpolations such as `vocabulary: ${labels}` by the values they point to,
    looked up from the root of the cfg. `root_names`: names a path may start with that mean the
    root itself (NeMo saves the `model:` subtree, whose values may still say `${model.x}`).
    Other strings, custom resolvers included, stay as they are; a reference to a missing key,
    or a cycle, raises KeyError."""
    root = cfg if root is None else root
    if _depth > 32:
        raise KeyError("interpolation cycle in the config")
    again = {"root_names": root_names}
    if isinstance(cfg, dict):
        return {k: resolve_interpolations(v, root, _depth, **again) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [resolve_interpolations(v, root, _depth, **again) for v in cfg]
    if isinstance(cfg, str) and (m := _INTERPOLATION.match(cfg)):
        keys = m.group(1).split(".")
        if len(keys) > 1 and keys[0] in root_names and keys[0] not in root:
            keys = keys[1:]
        target = root
        for key in keys:
            if not isinstance(target, dict) or key not in target:
                raise KeyError(f"interpolation {cfg} points nowhere")
            target = target[key]
        return resolve_interpolations(target, root, _depth + 1, **again)
    return cfg
