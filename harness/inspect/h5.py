"""Legacy Keras `.h5` files: the model_config attribute (h5py), read as a `.keras` file's config."""

from __future__ import annotations

import json
from pathlib import Path

from harness.inspect.common import checked, corrupt, first_line
from harness.inspect.keras import keras_model


def read_h5(path: Path, info: dict, signature: str | None, tag: str | None) -> None:
    from harness.export.validate import check_h5

    expected = "a Keras .h5 model with a model_config attribute"
    checked(check_h5, path, "h5", ".h5 file", "is not a Keras model", expected)
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs["model_config"]
            version = f.attrs.get("keras_version")
        config = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (OSError, KeyError, ValueError) as e:
        raise corrupt(".h5 file", path, f"has an unreadable model_config ({first_line(e)})", expected) from None
    info["format"] = "h5"
    info["keras_version"] = version.decode() if isinstance(version, bytes) else (str(version) if version is not None else None)
    keras_model(config, info, str(path))
