"""SAR imagette readers (PNG/GeoTIFF quick-looks or sigma0 in dB), normalisation, multi-crop views.

Sentinel-1 Wave Mode imagettes come as 8-bit quick-looks (PNG) or calibrated sigma0 (GeoTIFF,
linear or dB). Every image is read through :func:`eokit.core.raster.read_raster`, checked for one
channel, centre-cropped to a common size, and normalised with a :class:`Normalisation` that is
stored with the model, so that embedding later applies exactly the same mapping.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from eokit.core.errors import DataError, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "ImagetteDataset",
    "MultiCrop",
    "Normalisation",
    "list_imagettes",
    "load_imagettes",
    "read_imagette",
]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")

#: WV-Net's quick-look statistics (hawaii-ai/WV-Net, ``wvnet/data_utils.py``), in 0-255 units.
WVNET_QUICKLOOK_MEAN = 103.49
WVNET_QUICKLOOK_STD = 56.75


@dataclass(frozen=True)
class Normalisation:
    """How raw imagette values become network input: ``(clip(value) - mean) / std``.

    Attributes:
        kind: ``"quicklook"`` (8-bit, 0-255), ``"sigma0_db"`` (dB) or ``"sigma0_linear"``
            (linear sigma0, converted to dB first).
        mean: Mean subtracted, in the units after conversion.
        std: Standard deviation divided by.
        low: Lower clip (same units).
        high: Upper clip.
    """

    kind: Literal["quicklook", "sigma0_db", "sigma0_linear"] = "quicklook"
    mean: float = WVNET_QUICKLOOK_MEAN
    std: float = WVNET_QUICKLOOK_STD
    low: float = 0.0
    high: float = 255.0

    def __post_init__(self) -> None:
        if self.kind not in ("quicklook", "sigma0_db", "sigma0_linear"):
            raise InputError(f"unknown kind {self.kind!r}", parameter="normalisation")
        if not (math.isfinite(self.std) and self.std > 0):
            raise InputError(f"std must be > 0, got {self.std}", parameter="normalisation")
        if not self.low < self.high:
            raise InputError(f"clip range [{self.low}, {self.high}] is empty",
                             parameter="normalisation")

    @classmethod
    def for_kind(cls, kind: str) -> Normalisation:
        """Default constants for a kind (quick-looks: WV-Net's; sigma0: -35..+5 dB)."""
        if kind == "quicklook":
            return cls()
        if kind in ("sigma0_db", "sigma0_linear"):
            return cls(kind=kind, mean=-15.0, std=6.0, low=-35.0, high=5.0)  # type: ignore[arg-type]
        raise InputError(f"must be quicklook, sigma0_db or sigma0_linear, got {kind!r}",
                         parameter="normalisation")

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of ``values``."""
        x = np.asarray(values, dtype=np.float32)
        if self.kind == "sigma0_linear":
            x = (10.0 * np.log10(np.maximum(x, 1e-6))).astype(np.float32)
        return ((np.clip(x, self.low, self.high) - self.mean) / self.std).astype(np.float32)

    def to_json(self) -> str:
        """JSON text (stored in model metadata)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Normalisation:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))


def list_imagettes(folder: str | Path) -> list[Path]:
    """Imagette files of a folder (PNG/GeoTIFF), sorted by name.

    Raises:
        InputError: not a folder, or no image in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("imagette folder not found" if not folder.exists() else "not a folder",
                         path=folder)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not paths:
        raise InputError(f"no imagettes ({', '.join(IMAGE_SUFFIXES)}) in the folder", path=folder)
    return paths


def read_imagette(path: str | Path) -> np.ndarray:
    """One single-channel imagette as ``(H, W)`` float32 in its file's units.

    Raises:
        InputError: unreadable, or more than one channel.
    """
    from eokit.core.raster import read_raster

    raster = read_raster(path, dtype=np.float32)
    if raster.data.shape[0] != 1:
        raise InputError(f"has {raster.data.shape[0]} channels; imagettes must be single-channel "
                         "(VV)", path=path)
    return np.asarray(raster.data[0], dtype=np.float32)


def _centre_crop(image: np.ndarray, size: int, path: Path | str) -> np.ndarray:
    height, width = image.shape
    if height < size or width < size:
        raise InputError(f"is {height}x{width} pixels, smaller than the crop size {size}",
                         path=path)
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def load_imagettes(paths: Sequence[str | Path], size: int | None,
                   normalisation: Normalisation) -> np.ndarray:
    """Read, centre-crop and normalise imagettes into one ``(N, 1, S, S)`` float32 array.

    Args:
        paths: Image files.
        size: Centre-crop size; None requires every image to have the same size.
        normalisation: Value mapping.

    Raises:
        InputError: mixed channels, mixed sizes without ``size``, an image smaller than ``size``.
    """
    if not paths:
        raise InputError("no imagettes given", parameter="images")
    out: list[np.ndarray] = []
    first_shape: tuple[int, int] | None = None
    for path in paths:
        image = read_imagette(path)
        if size is None:
            if first_shape is None:
                first_shape = image.shape
            elif image.shape != first_shape:
                raise InputError(f"is {image.shape[0]}x{image.shape[1]} pixels but "
                                 f"{Path(paths[0]).name} is {first_shape[0]}x{first_shape[1]}; "
                                 "images of mixed sizes need a crop size (--size)", path=path)
        else:
            image = _centre_crop(image, size, path)
        out.append(normalisation.apply(image)[None])
    return np.stack(out).astype(np.float32)


class MultiCrop:
    """DINO multi-crop views of a ``(1, H, W)`` tensor: 2 global and ``local_crops`` local ones.

    Random resized crops (torchvision) with flips and 90-degree rotations (SAR imagettes have no
    preferred orientation at this scale), a little gain/offset jitter and blur on global views.

    Args:
        global_size: Output size of the global views.
        local_size: Output size of the local views.
        local_crops: Number of local views.
        global_scale: Area fraction range of the global crops.
        local_scale: Area fraction range of the local crops.
    """

    def __init__(self, global_size: int = 32, local_size: int = 16, local_crops: int = 4,
                 global_scale: tuple[float, float] = (0.4, 1.0),
                 local_scale: tuple[float, float] = (0.1, 0.4)) -> None:
        from torchvision.transforms import v2

        if global_size < 8 or local_size < 4 or local_crops < 0:
            raise InputError("global_size >= 8, local_size >= 4 and local_crops >= 0 required",
                             parameter="multicrop")
        self.local_crops = local_crops
        flips = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
        self.global_view = v2.Compose([
            v2.RandomResizedCrop(global_size, scale=global_scale, antialias=True), *flips,
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.5),
        ])
        self.local_view = v2.Compose([
            v2.RandomResizedCrop(local_size, scale=local_scale, antialias=True), *flips,
        ])

    def _jitter(self, view: torch.Tensor) -> torch.Tensor:
        gain = 1.0 + 0.2 * (torch.rand(()) - 0.5)
        offset = 0.2 * (torch.rand(()) - 0.5)
        view = view * gain + offset
        return torch.rot90(view, int(torch.randint(0, 4, ())), dims=(-2, -1))

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Global views first, then local views."""
        views = [self._jitter(self.global_view(image)) for _ in range(2)]
        views += [self._jitter(self.local_view(image)) for _ in range(self.local_crops)]
        return views


class ImagetteDataset(Dataset[dict[str, Any]]):
    """Normalised imagettes ``(N, 1, S, S)`` as samples ``{"image", "index", "views"?}``.

    Args:
        images: ``(N, 1, S, S)`` float32 normalised images.
        transform: Optional :class:`MultiCrop` (adds ``"views"``, a list of tensors).
        targets: Optional per-sample arrays (``{"label": (N,), "wind_speed": (N,)}``).
    """

    def __init__(self, images: np.ndarray, transform: MultiCrop | None = None,
                 targets: dict[str, np.ndarray] | None = None) -> None:
        if images.ndim != 4 or images.shape[1] != 1:
            raise InputError(f"images must be (N, 1, S, S), got {images.shape}",
                             parameter="images")
        if len(images) == 0:
            raise DataError("no imagettes")
        if not np.isfinite(images).all():
            raise DataError("imagettes hold NaN or infinite values after normalisation")
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        self.transform = transform
        self.targets = {k: np.asarray(v) for k, v in (targets or {}).items()}
        for name, values in self.targets.items():
            if len(values) != len(images):
                raise InputError(f"{len(values)} values for {len(images)} images",
                                 parameter=name)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.images[index]
        sample: dict[str, Any] = {"image": image, "index": int(index)}
        if self.transform is not None:
            sample["views"] = self.transform(image)
        return sample


def collate_views(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images, indices and each view position of a batch of multi-crop samples."""
    out: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in batch]),
        "index": torch.tensor([s["index"] for s in batch], dtype=torch.long),
    }
    if "views" in batch[0]:
        out["views"] = [torch.stack([s["views"][i] for s in batch])
                        for i in range(len(batch[0]["views"]))]
    return out
