"""Path containment for the Python workers: nothing an artifact names may resolve outside its folder.

An artifact is data from outside the worker (a model from anywhere, or a cache someone tampered with):
its `artifact.json` path, a symbolic link in its folder, a SavedModel asset's file name, an ONNX
tensor's external data location could each point at /etc/passwd. The worker refuses such an artifact
before the runtime opens it, with one line naming the path, where it leads and the folder it left."""

from __future__ import annotations

import os
from pathlib import Path

from harness_runners.protocol import ProtocolError


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def refuse(what: str, path: str | Path, real: Path, root: Path) -> ProtocolError:
    return ProtocolError("load_failed", f"{what} {str(path)!r} resolves to {real}, outside the artifact folder {root}: refused")


def check_artifact(artifact: dict, model_path: Path) -> Path:
    """The artifact folder, after checking the model's path and every link below the folder; raises
    ProtocolError('load_failed', '... outside the artifact folder ...') otherwise."""
    rel = Path(artifact.get("path") or ".")
    folder = model_path
    for _ in rel.parts:
        folder = folder.parent
    root = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(model_path))
    if rel.is_absolute() or ".." in rel.parts or not _inside(root, real):
        raise refuse("artifact path", str(artifact.get("path")), real, root)
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(top) / name
            if p.is_symlink():
                target = Path(os.path.realpath(p))
                if not _inside(root, target):
                    raise refuse("link", p, target, root)
    return root


def check_inside(root: Path, base: Path, name: str, what: str) -> Path:
    """`base / name` resolved, when it stays in `root`; refused otherwise (absolute names too)."""
    real = Path(os.path.realpath(base / name))
    if Path(name).is_absolute() or not _inside(root, real):
        raise refuse(what, name, real, root)
    return real


def check_savedmodel_assets(root: Path, model_dir: Path) -> None:
    """A SavedModel's assets are files under assets/ named in saved_model.pb; TensorFlow joins the name
    to the folder as it is, so a name with ../ would read any file."""
    pb = model_dir / "saved_model.pb"
    if not pb.exists():
        return
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(pb.read_bytes())
    except Exception:
        return  # not ours to judge: TensorFlow's loader says what is wrong with it
    for mg in sm.meta_graphs:
        for asset in mg.asset_file_def:
            check_inside(root, model_dir / "assets", asset.filename, "SavedModel asset")


def check_onnx_external_data(root: Path, model_path: Path) -> None:
    """ONNX tensors may keep their data in other files (`external_data` location): each must stay in
    the folder. ONNX Runtime refuses ../ and absolute locations itself; a link is caught by
    check_artifact; this names the file either way."""
    data = model_path.read_bytes()
    if b"location" not in data:
        return
    import onnx

    model = onnx.load_model_from_string(data)
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for t in tensors:
        for entry in t.external_data:
            if entry.key == "location":
                check_inside(root, model_path.parent, entry.value, f"external data of tensor {t.name!r}")
