"""Backbones pretrained on chest X-rays (torchxrayvision, Cohen et al. 2020), beside ImageNet's.

torchxrayvision's DenseNet-121 "densenet121-res224-all" was trained on seven public chest X-ray sets
(NIH, PadChest, CheXpert, MIMIC-CXR, Google, OpenI, RSNA) and its ResNet-50 "resnet50-res512-all" on
five (PadChest, NIH, RSNA, SIIM, VinDr), 18 findings each. Architecturally they are torchvision's
DenseNet-121 and ResNet-50 with a ONE-channel first convolution and 18 outputs, so they are built
here from torchvision (random weights, nothing downloaded, the package not even needed) and the
published weights are loaded over them with weights_only=True. A test checks that torchxrayvision's
own DenseNet gives the same features with the same weights.

Their input convention, handled inside the model (TransferNet) so the app's 0..1 images go in as for
every other model: one channel, intensities scaled to [-1024, 1024] (xrv.utils.normalize: 2·x − 1
times 1024, i.e. (x − 0.5) / (1/2048)), and resized to the resolution the weights were trained at
(224 px for the DenseNet, 512 px for the ResNet-50), as torchxrayvision's own models do.

Weights, honestly: torchxrayvision keeps them in ~/.torchxrayvision/models_data/<file named in the
url> (xrv.utils.get_cache_dir()). Without the file and without network a run trains from random
initialisation and is labelled '(random init)', exactly as for ImageNet weights.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

# Below explore.models.backbones, never above it: backbones' registry includes these entries.
from explore.models.pretrained_files import (WeightsUnavailable, spec_download_allowed, spec_offline_message,
                                      torchvision_models)

XRV_RELEASES = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
XRV_NUM_OUTPUTS = 18  # the published classifiers predict 18 findings (xrv.datasets.default_pathologies)
# xrv.utils.normalize maps 0..maxval to [-1024, 1024]: for 0..1 input, (x - 0.5) / (1 / 2048).
XRV_MEAN, XRV_STD = (0.5,), (1 / 2048,)


def xrv_cache_dir() -> Path:
    """Where torchxrayvision keeps (and downloads) its weights: ~/.torchxrayvision/models_data."""
    return Path(os.path.expanduser("~")) / ".torchxrayvision" / "models_data"


@dataclass(frozen=True)
class XrvBackbone:
    """A torchxrayvision network as a transfer backbone: the same interface as backbones.Backbone."""

    name: str
    title: str
    weights_key: str  # torchxrayvision's name for the weights, e.g. "densenet121-res224-all"
    url: str  # where torchxrayvision downloads them from (xrv.models.model_urls[key]["weights_url"])
    builder_name: str  # torchvision's architecture function, "densenet121" / "resnet50" (imported on first use)
    stem: str  # the first convolution, replaced by a one-channel one
    head_attribute: str
    last_block: tuple[str, ...]
    input_size: int  # the resolution the weights were trained at; the model resizes its input to it
    pretraining: str = "chest X-ray"
    input_mean: tuple[float, ...] = XRV_MEAN
    input_std: tuple[float, ...] = XRV_STD

    @property
    def builder(self):
        return getattr(torchvision_models(), self.builder_name)

    @property
    def weights_name(self) -> str:
        return f"torchxrayvision:{self.weights_key}"

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    def weights_path(self) -> Path:
        return xrv_cache_dir() / self.filename

    def fetch_hint(self) -> str:
        return (f"(or, with torchxrayvision installed, `python -c \"import torchxrayvision as xrv; "
                f"xrv.models.get_model('{self.weights_key}')\"` fetches the same file)")

    def architecture(self, with_aux: bool = False) -> nn.Module:
        """torchvision's network with a one-channel stem and 18 outputs: torchxrayvision's layout, random weights."""
        net = self.builder(weights=None, num_classes=XRV_NUM_OUTPUTS)
        old = net.get_submodule(self.stem)
        one_channel = nn.Conv2d(1, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                                padding=old.padding, bias=False)
        parent, _, attribute = self.stem.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attribute, one_channel)
        return net

    def load_pretrained(self) -> nn.Module:
        """The architecture with the published weights from the cache (downloaded first when allowed)."""
        path = self.weights_path()
        if not path.is_file():
            if not spec_download_allowed(self):
                raise WeightsUnavailable(spec_offline_message(self))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(self.url, str(path), progress=True)  # temp file, then renamed
            except OSError as error:
                raise WeightsUnavailable(f"downloading {self.url} failed ({error}). "
                                         f"{spec_offline_message(self)}") from error
        try:
            state = xrv_state_dict(path)
            net = self.architecture()
            net.load_state_dict(state)
        except Exception as error:  # a torn file, foreign classes that the allowlist refuses, other shapes
            raise WeightsUnavailable(f"the weights file {path} cannot be loaded safely "
                                     f"({str(error).splitlines()[0][:200]}); delete it and fetch it again "
                                     f"with `python -m explore fetch-weights {self.name}`") from error
        return net


def _pickled_module_classes() -> list:
    """The classes a whole pickled torchxrayvision DenseNet holds (its published file is torch.save(model),
    not a state dict): allowed by name for weights_only loading, nothing else is."""
    allowed = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, nn.Sequential,
               nn.Dropout, set]
    try:
        import warnings

        with warnings.catch_warnings():  # torchxrayvision.models silences all warnings when imported
            from torchxrayvision import models as xrv_models
        allowed += [xrv_models.DenseNet, xrv_models._DenseBlock, xrv_models._DenseLayer, xrv_models._Transition]
    except ImportError:
        pass  # then a pickled xrv model is refused below, with the class it needed named
    return allowed


def xrv_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a torchxrayvision weights file, loaded with weights_only=True.

    The ResNet-50 file is a state dict. The DenseNet files are whole pickled models; they are
    unpickled by torch's weights-only unpickler with an allowlist of exactly the layer classes
    such a model consists of, so a file that names any other class or function is refused."""
    try:
        with torch.serialization.safe_globals(_pickled_module_classes()):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except torch.serialization.pickle.UnpicklingError as error:  # pickle's class via torch: never imported here
        # torch's message starts with generic advice: keep the reason
        reason = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line), "")
        refused = re.search(r"GLOBAL (\S+)", reason)
        needed = refused.group(1) if refused else "an object weights_only cannot read"
        hint = ("; `pip install torchxrayvision` so its model classes can be allowed"
                if needed.startswith("torchxrayvision") else "")
        raise ValueError(f"the file needs {needed}, which is not an allowed layer class{hint}") from error
    if isinstance(loaded, nn.Module):
        for module in loaded.modules():  # modules pickled by old PyTorch lack this (as torchxrayvision patches)
            if not hasattr(module, "_non_persistent_buffers_set"):
                module._non_persistent_buffers_set = set()
        loaded = loaded.state_dict()
    if not isinstance(loaded, dict):
        raise ValueError(f"expected a state dict or a pickled model, found {type(loaded).__name__}")
    # op_threshs: torchxrayvision's per-finding calibration of ITS classifier, which is cut off here.
    return {k: v for k, v in loaded.items() if k != "op_threshs"}


XRV_BACKBONES: list[XrvBackbone] = [
    # DenseNet's final BatchNorm (norm5) comes after the last dense block, so it trains with it (as for ImageNet's).
    XrvBackbone("xrv_densenet121", "DenseNet-121 (chest X-rays, torchxrayvision)", "densenet121-res224-all",
                XRV_RELEASES + "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-"
                               "sc15-seed0-best.pt",
                "densenet121", "features.conv0", "classifier", ("features.denseblock4", "features.norm5"), 224),
    XrvBackbone("xrv_resnet50", "ResNet-50 (chest X-rays, torchxrayvision)", "resnet50-res512-all",
                XRV_RELEASES + "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt",
                "resnet50", "conv1", "fc", ("layer4",), 512),
]
