"""Where pretrained weights come from, below every backbone registry: the label of a random start,
the error when weights cannot be had, whether a download is possible, and what to tell the user.

explore.models.backbones (ImageNet, and the whole BACKBONES registry) and explore.models.xrv_backbones (chest
X-rays) both use these. They live here, not in backbones, because backbones' registry includes the
chest X-ray entries: xrv_backbones importing backbones would make an import cycle. Every function
takes a backbone entry (anything with name, title, url, filename, pretraining, weights_path(),
fetch_hint()), never a name, so nothing here needs the registry.
"""
from __future__ import annotations

import socket
import time
import urllib.request
from urllib.parse import urlparse
from explore.settings import offline

RANDOM = "random"  # the weights name of a randomly initialised backbone


class WeightsUnavailable(Exception):
    """The pretrained weights are not in the cache and cannot be downloaded (message says what to do)."""


def torchvision_models():
    """torchvision.models, imported on first use: importing it takes seconds, and a server, a worker
    process or the CLI training a course model never needs it (the registries are names only)."""
    from torchvision import models

    return models


_REACHABLE: dict[str, tuple[float, bool]] = {}  # host → (checked at, reachable): one probe a minute at most


def network_reachable(url: str, timeout_s: float = 2.0) -> bool:
    """Can this machine open a connection to the download server (or its https proxy)? Fast when offline."""
    proxy = urllib.request.getproxies().get("https")
    target = urlparse(proxy) if proxy else urlparse(url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    checked = _REACHABLE.get(f"{host}:{port}")
    if checked and time.monotonic() - checked[0] < 60:
        return checked[1]
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            reachable = True
    except OSError:
        reachable = False
    _REACHABLE[f"{host}:{port}"] = (time.monotonic(), reachable)
    return reachable


def spec_download_allowed(spec) -> bool:
    """Downloads are off with EXPLORE_OFFLINE=1, and pointless when the server cannot be reached."""
    if offline():
        return False
    return network_reachable(spec.url)


def spec_offline_message(spec) -> str:
    """What to do when a backbone's weights are missing and cannot be downloaded here."""
    path = spec.weights_path()
    return (f"The {spec.pretraining} weights for {spec.title} are not on this machine, and this machine cannot "
            f"download them (no network). Expected file: {spec.filename} in {path.parent} (full path: {path}). "
            f"On a computer with internet, run `python -m explore fetch-weights {spec.name}` and copy the file to "
            f"that folder {spec.fetch_hint()}. Without it, "
            f"a run starts from random weights and is labelled '{RANDOM}': that is training from scratch, "
            f"not transfer learning.")
