"""Hand an experiment to someone else: a link that opens the same configuration, and a run
bundle (zip) that replays a finished run on another machine without retraining.
"""
from __future__ import annotations

import base64
import io
import json
import zipfile
import zlib

import torch

from explore.training.config import RunConfig
from explore.training.store import RunStore, StoreError, load_tensors, save_tensors, write_atomic, write_json

BUNDLE_FILES = ("config.json", "metrics.jsonl", "summary.json", "status.json")
TENSOR_FILES = ("weights.pt", "predictions.pt")
MAX_BUNDLE_BYTES = 300 * 1024 * 1024


def encode_config(config: RunConfig) -> str:
    """A compact URL-safe token for `?config=...` (compressed JSON, no secrets, no pickles)."""
    raw = json.dumps(config.to_dict(), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def decode_config(token: str) -> RunConfig:
    """The RunConfig in a shared link; a damaged or hostile token is a ValueError with a plain message."""
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = zlib.decompress(base64.urlsafe_b64decode(padded.encode()), bufsize=65536)
        if len(raw) > 65536:
            raise ValueError("too long")
        return RunConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError, zlib.error, json.JSONDecodeError) as error:
        raise ValueError(f"this link's configuration cannot be read ({error})") from error


def export_run_bundle(store: RunStore, run_id: str, include_tensors: bool = True) -> bytes:
    """A zip of the run folder: config, metrics, summary, and (optionally) weights and predictions."""
    path = store.path(run_id)
    if not (path / "config.json").is_file():
        raise StoreError(f"run {run_id} has no config.json")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in BUNDLE_FILES + (TENSOR_FILES if include_tensors else ()):
            if (path / name).is_file():
                archive.write(path / name, f"{run_id}/{name}")
    return buffer.getvalue()


def import_run_bundle(data: bytes, store: RunStore, accept_weights: bool = True) -> str:
    """Unpack a bundle made by `export_run_bundle` into a new run folder; returns the new run id.

    Every file is validated before anything is written: JSON must parse, the config must be a
    valid RunConfig, and tensor files must load with weights_only=True (nothing is unpickled).
    With `accept_weights=False` (demo mode) weights are dropped: curves and metrics replay, no model.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise StoreError(f"the bundle is larger than {MAX_BUNDLE_BYTES // 1024 // 1024} MB")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise StoreError("this file is not a zip made by 'export run'") from error
    files = {}
    for info in archive.infolist():
        name = info.filename.rsplit("/", 1)[-1]
        if name in BUNDLE_FILES + TENSOR_FILES and not info.is_dir():
            if info.file_size > MAX_BUNDLE_BYTES:
                raise StoreError(f"{name} in the bundle is too large")
            files[name] = archive.read(info)
    if "config.json" not in files:
        raise StoreError("the bundle has no config.json: it is not a run bundle")
    try:
        config = RunConfig.from_json(files["config.json"].decode())
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        raise StoreError(f"the bundle's config.json is not a valid run configuration: {error}") from error
    tensors = {}
    for name in TENSOR_FILES:
        if name in files and (accept_weights or name != "weights.pt"):
            tensors[name] = _load_tensor_bytes(name, files[name])
    summary = _json_or_error("summary.json", files.get("summary.json"))
    run_id = store.create(config.replace(name=(config.name or config.model) + " (imported)"))
    path = store.path(run_id)
    if "metrics.jsonl" in files:
        write_atomic(path / "metrics.jsonl", files["metrics.jsonl"])
    for name, value in tensors.items():
        save_tensors(path / name, value)
    status = "finished" if summary else "stopped"
    summary = (summary or {"status": status}) | {"run_id": run_id, "imported": True,
                                                  "weights_imported": "weights.pt" in tensors}
    write_json(path / "summary.json", summary)
    store.set_status(run_id, status=summary.get("status", status), message="imported from a run bundle")
    return run_id


def _json_or_error(name: str, raw: bytes | None):
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise StoreError(f"the bundle's {name} is not valid JSON") from error
    return value if isinstance(value, dict) else None


def _load_tensor_bytes(name: str, raw: bytes):
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as error:
        raise StoreError(f"the bundle's {name} cannot be loaded safely (only plain tensors are accepted): "
                         f"{str(error).splitlines()[0][:160]}") from error
