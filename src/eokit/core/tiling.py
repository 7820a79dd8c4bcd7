"""Streaming tiled inference: window planner, prefetching reader, batched model, blended writer.

The loop is ``source -> batches -> model -> blend -> sink``. The scene is cut into vertical bands
of at most ``band_width`` columns, and each band is processed one window-row at a time: a
background thread reads the next row-strip (band wide, ``tile`` rows) of every input while the
model runs on the current one; predictions are blended with separable weights into an
accumulator one strip tall, and every output row that no later window touches is normalised and
handed to the GeoTIFF/COG writer immediately. Memory is therefore bounded by ``tile``,
``batch_size`` and ``band_width``, never by the scene size. A band runs every window that
overlaps its columns, so the result is identical to a single full-width pass.

With ``blend="cosine"`` or ``"linear"`` the weights are exactly zero within ``overlap // 4``
pixels of every window edge that lies inside the scene, so for a translation-equivariant model
whose receptive-field radius is at most ``overlap // 4`` the tiled output equals whole-image
inference everywhere (``blend="none"``: radius up to ``overlap // 2``; each pixel then comes from
the window in which it is most central).

Strided networks (a U-Net whose coarsest map is 1/32 of the input) are equivariant only to shifts
by their stride, and pad their input up to a multiple of it. ``align=stride`` makes the tiling
respect both: the scene is seen padded by edge replication to a multiple of ``align`` (what such
a model does to a whole image), every window starts at a multiple of ``align`` (``tile`` and
``overlap`` must be multiples of it), and the padding is cut off before writing.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eokit.core.errors import InputError

if TYPE_CHECKING:
    import torch

    from eokit.core.raster import PathLike

logger = logging.getLogger(__name__)

WindowTuple = tuple[int, int, int, int]
Preprocess = Callable[[list[np.ndarray]], list["torch.Tensor"]]
Postprocess = Callable[[np.ndarray], np.ndarray]

BLENDS = ("cosine", "linear", "none")
_PREFETCH_STRIPS = 2


# --------------------------------------------------------------------------------------------
# Planning and weights
# --------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """Torch device for inference from a user setting, with a one-line error if it is missing.

    ``"auto"`` picks the first CUDA GPU when there is one, else Apple's ``mps``, else the CPU;
    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"`` must exist on this machine.
    """
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps",
                         parameter="device") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"{name!r} asked for, but this machine has no CUDA GPU (torch "
                             f"{torch.__version__}); use --device cpu", parameter="device")
        if device.index is not None and device.index >= count:
            raise InputError(f"{name!r} asked for, but this machine has {count} CUDA GPU(s)",
                             parameter="device")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{name!r} asked for, but MPS is not available here", parameter="device")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps",
                         parameter="device")
    return device


def check_tiling(tile: int, overlap: int, batch_size: int = 1) -> None:
    """InputError unless tile >= 1, 0 <= overlap < tile and batch_size >= 1 (all integers)."""
    if int(tile) != tile or tile < 1:
        raise InputError(f"must be a positive integer, got {tile}", parameter="tile")
    if int(overlap) != overlap or overlap < 0 or overlap >= tile:
        raise InputError(f"must be in 0..tile-1 (tile={tile}), got {overlap}", parameter="overlap")
    if int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"must be a positive integer, got {batch_size}", parameter="batch_size")


def _axis_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)  # last window flush with the edge, full size
    return starts


def plan_windows(height: int, width: int, *, tile: int, overlap: int) -> list[WindowTuple]:
    """Overlapping windows that cover a ``height`` x ``width`` raster, in row-major order.

    Windows are ``tile`` x ``tile`` (smaller only when the raster is), step ``tile - overlap``;
    the last window of a row/column is moved back to end flush with the raster, so it may overlap
    its neighbour by more than ``overlap``.

    Args:
        height: Raster height in pixels.
        width: Raster width in pixels.
        tile: Window size in pixels.
        overlap: Overlap between neighbouring windows in pixels (0 <= overlap < tile).

    Returns:
        List of (row_off, col_off, height, width).

    Raises:
        InputError: on a non-positive size, tile, or an overlap outside 0..tile-1.
    """
    check_tiling(tile, overlap)
    if height < 1 or width < 1:
        raise InputError(f"raster size must be positive, got {width}x{height}", parameter="shape")
    stride = tile - overlap
    rows = _axis_starts(height, tile, stride)
    cols = _axis_starts(width, tile, stride)
    win_h, win_w = min(tile, height), min(tile, width)
    return [(r, c, win_h, win_w) for r in rows for c in cols]


def _ramp(length: int, overlap: int, blend: str) -> np.ndarray:
    """Weights for the ``overlap`` pixels next to an inner window edge (index 0 = the edge)."""
    if overlap == 0:
        return np.ones(0, dtype=np.float64)
    if blend == "none":
        margin = overlap // 2
        ramp = np.ones(overlap)
        ramp[:margin] = 0.0
        return ramp[: min(overlap, length)]
    margin = overlap // 4
    span = overlap - 2 * margin
    ramp = np.ones(overlap)
    ramp[:margin] = 0.0
    position = (np.arange(span) + 0.5) / span
    if blend == "cosine":
        ramp[margin : margin + span] = 0.5 - 0.5 * np.cos(np.pi * position)
    else:
        ramp[margin : margin + span] = position
    return ramp[: min(overlap, length)]


def axis_weights(
    length: int, overlap: int, *, lead_inner: bool, trail_inner: bool, blend: str = "cosine"
) -> np.ndarray:
    """1-D blending weights of one window side (separable: 2-D weights are an outer product).

    Args:
        length: Window length along this axis.
        overlap: Nominal overlap in pixels.
        lead_inner: The leading edge (top/left) lies inside the scene (a neighbour overlaps it).
        trail_inner: The trailing edge (bottom/right) lies inside the scene.
        blend: "cosine", "linear" or "none".

    Returns:
        (length,) float32 weights in [0, 1]; 1 at edges that touch the scene border.
    """
    weights = np.ones(length, dtype=np.float64)
    ramp = _ramp(length, overlap, blend)
    if lead_inner and ramp.size:
        weights[: ramp.size] *= ramp
    if trail_inner and ramp.size:
        weights[length - ramp.size :] *= ramp[::-1]
    return weights.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Sources and sinks
# --------------------------------------------------------------------------------------------


Read = tuple[int, int, int, int]  # (row_off, height, col_off, width) of one strip


@dataclass
class _Strip:
    row_off: int
    col_off: int
    arrays: list[np.ndarray]  # one (C, h, w) array per input
    valid: np.ndarray  # (h, w) bool, valid in every input


class _ArraySource:
    """In-memory inputs (predict_array)."""

    def __init__(self, arrays: Sequence[np.ndarray], valid: np.ndarray | None) -> None:
        self.arrays = list(arrays)
        self.height, self.width = self.arrays[0].shape[1:]
        if valid is None:
            from eokit.core.raster import nodata_mask

            valid = np.ones((self.height, self.width), dtype=bool)
            for array in self.arrays:
                valid &= nodata_mask(array, None, check_finite=True)
        self.valid = valid

    def strips(self, reads: Sequence[Read]) -> Iterator[_Strip]:
        for row_off, h, col_off, w in reads:
            rows, cols = slice(row_off, row_off + h), slice(col_off, col_off + w)
            yield _Strip(
                row_off, col_off, [a[:, rows, cols] for a in self.arrays], self.valid[rows, cols]
            )

    def close(self) -> None:
        """Nothing to release."""


class _FileSource:
    """Row-strips read from GeoTIFFs by a background thread (bounded prefetch queue)."""

    def __init__(self, paths: Sequence[Path], bands: Sequence[int] | None) -> None:
        from eokit.core.raster import raster_info

        self.paths = list(paths)
        self.bands = bands
        grid, _, _ = raster_info(self.paths[0])
        self.height, self.width = grid.height, grid.width
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_strips(self, reads: Sequence[Read], out: queue.Queue[Any]) -> None:
        import rasterio
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        from eokit.core.raster import _band_indexes, _read_masks, nodata_mask

        try:
            datasets = [rasterio.open(p) for p in self.paths]
            try:
                indexes = [
                    _band_indexes(self.bands, d.count, p)
                    for d, p in zip(datasets, self.paths, strict=True)
                ]
                for row_off, h, col_off, w in reads:
                    if self._stop.is_set():
                        return
                    window = Window(col_off, row_off, w, h)
                    arrays = []
                    valid = np.ones((h, w), dtype=bool)
                    for dataset, index, path in zip(datasets, indexes, self.paths, strict=True):
                        try:
                            array = dataset.read(index, window=window)
                            mask = _read_masks(dataset, index, window)
                        except RasterioError as exc:
                            raise InputError(
                                f"pixel data cannot be read at rows {row_off}..{row_off + h} "
                                f"(truncated or corrupt file: {str(exc).splitlines()[0][:160]})",
                                path=path,
                            ) from None
                        valid &= nodata_mask(array, dataset.nodata, check_finite=True)
                        if mask is not None:
                            valid &= mask
                        arrays.append(array)
                    self._put(out, _Strip(row_off, col_off, arrays, valid))
            finally:
                for dataset in datasets:
                    dataset.close()
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(out, exc)
            return
        self._put(out, None)

    def _put(self, out: queue.Queue[Any], item: Any) -> None:
        while not self._stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def strips(self, reads: Sequence[Read]) -> Iterator[_Strip]:
        out: queue.Queue[Any] = queue.Queue(maxsize=_PREFETCH_STRIPS)
        self._thread = threading.Thread(
            target=self._read_strips, args=(reads, out), name="eokit-tile-reader", daemon=True
        )
        self._thread.start()
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the reader thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class _ThreadedSink:
    """Hands finished blocks to a writer thread, so GDAL compression overlaps the model.

    At most ``_PREFETCH_STRIPS`` blocks wait in the queue (bounded memory).
    """

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_PREFETCH_STRIPS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="eokit-tile-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self.sink.write_window(*item)
                except BaseException as exc:  # re-raised in the producer
                    self._error = exc

    def write_window(self, data: np.ndarray, row_off: int, col_off: int) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((data, row_off, col_off))

    def abort(self) -> None:
        """Stop the writer thread without raising (the caller is already failing)."""
        self._error = self._error or RuntimeError("aborted")
        self._queue.put(None)
        self._thread.join()

    def close(self) -> None:
        """Wait until every block is written; re-raise a writer error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _ArraySink:
    def __init__(self, count: int, height: int, width: int, dtype: np.dtype) -> None:
        self.array = np.empty((count, height, width), dtype=dtype)

    def write_window(self, data: np.ndarray, row_off: int, col_off: int) -> None:
        self.array[:, row_off : row_off + data.shape[1], col_off : col_off + data.shape[2]] = data


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _default_preprocess(arrays: list[np.ndarray]) -> list[torch.Tensor]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]


def _default_nodata(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.floating):
        return float("nan")
    return float(np.iinfo(dtype).max)


def _to_dtype(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer) and np.issubdtype(block.dtype, np.floating):
        info = np.iinfo(dtype)
        block = np.clip(np.rint(np.nan_to_num(block)), info.min, info.max)
    return block.astype(dtype, copy=False)


@dataclass
class _Settings:
    out_channels: int
    tile: int
    overlap: int
    batch_size: int
    blend: str
    device: str
    preprocess: Preprocess
    postprocess: Postprocess | None
    out_dtype: np.dtype
    nodata: float
    progress: bool
    band_width: int
    align: int = 1


def _run_model(model: Any, tensors: list[torch.Tensor], settings: _Settings) -> np.ndarray:
    output = model(*tensors)
    if isinstance(output, dict):
        output = next(iter(output.values()))
    elif isinstance(output, list | tuple):
        output = output[0]
    expected = (tensors[0].shape[0], settings.out_channels, *tensors[0].shape[2:])
    if tuple(output.shape) != expected:
        raise InputError(
            f"model returned shape {tuple(output.shape)}, expected {expected} "
            "(batch, out_channels, height, width)",
            parameter="out_channels",
        )
    return np.asarray(output.detach().float().cpu().numpy())


@dataclass
class _Band:
    """A vertical band of the scene processed top to bottom with its own strip accumulator."""

    out_start: int  # first output column this band writes
    out_stop: int  # one past the last output column it writes
    col_starts: list[int]  # global window columns it runs (those touching its output columns)
    read_start: int  # first column read / accumulated
    read_stop: int


def _plan_bands(width: int, col_starts: list[int], win_w: int, band_width: int) -> list[_Band]:
    """Split the columns at multiples of ``band_width`` (block-aligned output, bounded memory).

    A band runs every window that overlaps its output columns, so blending is identical to a
    single full-width pass; windows straddling a cut run twice (once per band). A remainder
    narrower than a quarter band joins the last band (bands are at most 1.25 x band_width).
    """
    cuts = list(range(0, width, band_width)) + [width]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] < band_width // 4:
        del cuts[-2]  # no sliver band at the right edge: the last band absorbs it
    bands = []
    for out_start, out_stop in zip(cuts[:-1], cuts[1:], strict=True):
        cols = [c for c in col_starts if c < out_stop and c + win_w > out_start]
        bands.append(_Band(out_start, out_stop, cols, cols[0], cols[-1] + win_w))
    return bands


class _EdgePadded:
    """A source seen ``height`` x ``width`` (>= its own), extra rows/columns repeating its edge."""

    def __init__(self, source: Any, height: int, width: int) -> None:
        self.source = source
        self.height, self.width = height, width

    def strips(self, reads: Sequence[Read]) -> Iterator[_Strip]:
        rows, cols = self.source.height, self.source.width
        inner = [(r, min(h, rows - r), c, min(w, cols - c)) for r, h, c, w in reads]
        for (_, h, _, w), strip in zip(reads, self.source.strips(inner), strict=True):
            got_h, got_w = strip.valid.shape
            pad = ((0, h - got_h), (0, w - got_w))
            arrays = [np.pad(a, ((0, 0), *pad), mode="edge") for a in strip.arrays]
            yield _Strip(strip.row_off, strip.col_off, arrays, np.pad(strip.valid, pad,
                                                                       mode="edge"))

    def close(self) -> None:
        """Close the wrapped source."""
        self.source.close()


class _Cropped:
    """A sink that drops whatever falls outside ``height`` x ``width``."""

    def __init__(self, sink: Any, height: int, width: int) -> None:
        self.sink, self.height, self.width = sink, height, width

    def write_window(self, data: np.ndarray, row_off: int, col_off: int) -> None:
        data = data[:, : max(0, self.height - row_off), : max(0, self.width - col_off)]
        if data.shape[1] and data.shape[2]:
            self.sink.write_window(data, row_off, col_off)


def _stream(model: Any, source: Any, sink: Any, settings: _Settings) -> int:
    """Run the tiled loop band by band, strip by strip; returns the count of valid output pixels."""
    if settings.align > 1:
        align = settings.align
        padded_h = -(-source.height // align) * align
        padded_w = -(-source.width // align) * align
        if (padded_h, padded_w) != (source.height, source.width):
            valid = _stream_aligned(model, _EdgePadded(source, padded_h, padded_w),
                                    _Cropped(sink, source.height, source.width), settings)
            return valid
    return _stream_aligned(model, source, sink, settings)


def _stream_aligned(model: Any, source: Any, sink: Any, settings: _Settings) -> int:
    import torch
    from tqdm.auto import tqdm

    height, width = source.height, source.width
    windows = plan_windows(height, width, tile=settings.tile, overlap=settings.overlap)
    row_starts = sorted({w[0] for w in windows})
    col_starts = sorted({w[1] for w in windows})
    win_h, win_w = windows[0][2], windows[0][3]
    bands = _plan_bands(width, col_starts, win_w, settings.band_width)
    reads = [
        (r, win_h, band.read_start, band.read_stop - band.read_start)
        for band in bands
        for r in row_starts
    ]
    band_of_read = [band for band in bands for _ in row_starts]
    accumulator_width = max(band.read_stop - band.read_start for band in bands)
    out_channels = settings.out_channels
    accumulator = np.zeros((out_channels, win_h, accumulator_width), dtype=np.float32)
    weight_sum = np.zeros((win_h, accumulator_width), dtype=np.float32)
    col_weights = {
        c: axis_weights(
            win_w,
            settings.overlap,
            lead_inner=c > 0,
            trail_inner=c + win_w < width,
            blend=settings.blend,
        )
        for c in col_starts
    }
    device = torch.device(settings.device)
    valid_pixels = 0
    is_module = isinstance(model, torch.nn.Module)
    # Every submodule's own mode: a wrapper built for the call is in training mode by default
    # while the model inside it is not, and model.train() would flip the whole tree.
    modes = [(m, m.training) for m in model.modules()] if is_module else []
    first = next(model.parameters(), None) if is_module else None
    home = first.device if first is not None else None
    if is_module:
        model.to(device)
        model.eval()
    total = sum(len(band.col_starts) for band in bands) * len(row_starts)
    logger.debug(
        "%d windows (%d distinct) in %d band(s), accumulator %dx%d px",
        total,
        len(windows),
        len(bands),
        accumulator_width,
        win_h,
    )
    progress = tqdm(
        total=total,
        unit="tile",
        desc="tiled inference",
        disable=not settings.progress,
        leave=False,
    )
    try:
        with torch.inference_mode():
            for index, strip in enumerate(source.strips(reads)):
                band = band_of_read[index]
                row_off = strip.row_off
                row_index = index % len(row_starts)
                row_weights = axis_weights(
                    win_h,
                    settings.overlap,
                    lead_inner=row_off > 0,
                    trail_inner=row_off + win_h < height,
                    blend=settings.blend,
                )
                local = [(c, c - band.read_start) for c in band.col_starts]
                todo = [(c, x) for c, x in local if strip.valid[:, x : x + win_w].any()]
                progress.update(len(local) - len(todo))
                for start in range(0, len(todo), settings.batch_size):
                    batch_cols = todo[start : start + settings.batch_size]
                    per_window = []
                    for _, x in batch_cols:
                        window_arrays = [a[:, :, x : x + win_w] for a in strip.arrays]
                        tensors = settings.preprocess(window_arrays)
                        window_invalid = torch.from_numpy(
                            np.ascontiguousarray(~strip.valid[:, x : x + win_w])
                        )
                        # masked_fill, not a product: NaN * 0 is still NaN
                        per_window.append([t.masked_fill(window_invalid, 0) for t in tensors])
                    batch = [
                        torch.stack([w[i] for w in per_window]).to(device)
                        for i in range(len(per_window[0]))
                    ]
                    prediction = _run_model(model, batch, settings)
                    for b, (c, x) in enumerate(batch_cols):
                        weight = np.outer(row_weights, col_weights[c])
                        accumulator[:, :, x : x + win_w] += prediction[b] * weight
                        weight_sum[:, x : x + win_w] += weight
                    progress.update(len(batch_cols))
                last_row = row_index + 1 == len(row_starts)
                next_row = height if last_row else row_starts[row_index + 1]
                done = next_row - row_off
                lo = band.out_start - band.read_start
                hi = band.out_stop - band.read_start
                valid_pixels += _flush(
                    accumulator[:, :, lo:hi],
                    weight_sum[:, lo:hi],
                    strip.valid[:, lo:hi],
                    done,
                    (row_off, band.out_start),
                    sink,
                    settings,
                )
                keep = 0 if last_row else win_h - done
                if keep > 0:
                    accumulator[:, :keep] = accumulator[:, done:win_h]
                    weight_sum[:keep] = weight_sum[done:win_h]
                accumulator[:, keep:] = 0.0
                weight_sum[keep:] = 0.0
    finally:
        progress.close()
        source.close()
        for module, mode in modes:
            module.training = mode
        if is_module and home is not None and home != device:
            model.to(home)
    return valid_pixels


def _flush(
    accumulator: np.ndarray,
    weight_sum: np.ndarray,
    valid: np.ndarray,
    done: int,
    offset: tuple[int, int],
    sink: Any,
    settings: _Settings,
) -> int:
    """Normalise the finished rows of the accumulator and write them."""
    weights = weight_sum[:done]
    ok = valid[:done] & (weights > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        block = accumulator[:, :done] / weights
    if settings.postprocess is not None:
        block = np.asarray(settings.postprocess(block))
        if block.ndim == 2:
            block = block[None]
    block = _to_dtype(block, settings.out_dtype)
    if not ok.all():
        block = block.copy() if not block.flags.writeable else block
        block[:, ~ok] = settings.nodata
    sink.write_window(block, *offset)
    return int(ok.sum())


def _settings(
    out_channels: int,
    tile: int,
    overlap: int,
    batch_size: int,
    blend: str,
    device: str,
    preprocess: Preprocess | None,
    postprocess: Postprocess | None,
    out_dtype: Any,
    nodata: float | None,
    progress: bool,
    band_width: int,
    align: int = 1,
) -> tuple[_Settings, int]:
    check_tiling(tile, overlap, batch_size)
    if int(align) != align or align < 1:
        raise InputError(f"must be a positive integer, got {align}", parameter="align")
    if tile % align or overlap % align:
        raise InputError(f"tile ({tile}) and overlap ({overlap}) must be multiples of {align}, "
                         "the model's stride", parameter="tile")
    if int(band_width) != band_width or band_width < 1:
        raise InputError(f"must be a positive integer, got {band_width}", parameter="band_width")
    if int(out_channels) != out_channels or out_channels < 1:
        raise InputError(
            f"must be a positive integer, got {out_channels}", parameter="out_channels"
        )
    if blend not in BLENDS:
        raise InputError(f"unknown blend {blend!r}; use one of {BLENDS}", parameter="blend")
    try:
        dtype = np.dtype(out_dtype)
    except TypeError:
        raise InputError(f"not a dtype: {out_dtype!r}", parameter="out_dtype") from None
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    count = out_channels
    if postprocess is not None:
        probe = np.asarray(postprocess(np.zeros((out_channels, 1, 1), dtype=np.float32)))
        count = 1 if probe.ndim == 2 else int(probe.shape[0])
    fill = _default_nodata(dtype) if nodata is None else float(nodata)
    if math.isnan(fill) and not np.issubdtype(dtype, np.floating):
        raise InputError(f"NaN cannot be stored in {dtype}", parameter="nodata")
    settings = _Settings(
        out_channels=int(out_channels),
        tile=int(tile),
        overlap=int(overlap),
        batch_size=int(batch_size),
        blend=blend,
        device=str(resolve_device(device)),
        preprocess=preprocess or _default_preprocess,
        postprocess=postprocess,
        out_dtype=dtype,
        nodata=fill,
        progress=progress,
        band_width=int(band_width),
        align=int(align),
    )
    return settings, count


def _gdal_cache_bytes(width: int, tile: int, in_bytes_per_px: int, out_bytes_per_px: int) -> int:
    """GDAL block cache big enough for two output block-rows and the input strips, no more.

    Capping it keeps memory flat: by default GDAL may cache up to 5 % of RAM of decoded input
    blocks, which grows with the scene until the cap is reached.
    """
    from eokit.core.raster import BLOCK_SIZE

    output_rows = 2 * width * BLOCK_SIZE * out_bytes_per_px
    input_rows = 2 * width * (tile + BLOCK_SIZE) * in_bytes_per_px
    return int(min(max(output_rows + input_rows + (32 << 20), 64 << 20), 4 << 30))


def predict_raster(
    model: Any,
    inputs: Sequence[PathLike] | PathLike,
    output: PathLike,
    *,
    out_channels: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    preprocess: Preprocess | None = None,
    out_dtype: Any = "float32",
    cog: bool = True,
    device: str = "cpu",
    blend: str = "cosine",
    band_names: Sequence[str] | None = None,
    progress: bool = True,
    bands: Sequence[int] | None = None,
    postprocess: Postprocess | None = None,
    nodata: float | None = None,
    compress: str = "deflate",
    band_width: int = 4096,
    align: int = 1,
    expected_bands: int | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Run ``model`` over GeoTIFF(s) window by window and stream the blended result to a GeoTIFF.

    One input: ``model(x)``; two inputs (bitemporal): ``model(a, b)``; inputs must share one grid.
    Each window is read for every input, turned into tensors by ``preprocess`` (default: float32,
    no scaling), zeroed where any input is invalid, batched and run under
    :func:`torch.inference_mode`. Output pixels where any input is nodata/NaN are ``nodata``.

    Example:
        >>> predict_raster(net, ["scene.tif"], "probability.tif", out_channels=8)  # doctest: +SKIP

    Args:
        model: ``nn.Module`` (moved to ``device`` and put in eval mode for the run; its device
            and mode are restored afterwards) or any
            callable returning (B, out_channels, h, w).
        inputs: One path or a sequence of paths on the same grid.
        output: Output GeoTIFF path (checked for writability before any work).
        out_channels: Channels the model returns.
        tile: Window size in pixels.
        overlap: Overlap between windows (see module docstring for exactness).
        batch_size: Windows per model call.
        preprocess: Per window: list of (C, h, w) arrays (one per input) -> list of tensors.
        out_dtype: Output dtype (floats are rounded and clipped for integer dtypes).
        cog: Write a Cloud-Optimized GeoTIFF (else a tiled GeoTIFF without overviews).
        device: Torch device for the model and its inputs (see :func:`resolve_device`).
        blend: "cosine", "linear" or "none".
        band_names: Output band descriptions.
        progress: Show a tqdm progress bar.
        bands: 1-based band indexes read from every input (default all).
        postprocess: Applied to each finished (out_channels, h, W) float32 block before writing,
            e.g. ``lambda p: p.argmax(0)[None]`` for a class map; may change the band count.
        nodata: Output nodata (default NaN for floats, the dtype maximum for integers).
        compress: "deflate", "zstd", "lzw" or "none".
        band_width: Scenes wider than this are processed in vertical bands of this many columns
            (rounded up to the 512 px output block), so memory does not grow with the scene
            width either; windows that straddle a band edge run twice (a few % more compute).
        expected_bands: Bands per input the model needs; a mismatch is an InputError naming the
            file (checked before any work).
        align: Stride of the model: windows start at multiples of it and the scene is seen
            edge-padded to a multiple of it (see the module docstring); 1 = no constraint.
        tags: Extra dataset tags of the output (e.g. ``CLASS_<i>`` class names).

    Returns:
        The output path.

    Raises:
        InputError: bad inputs (missing, corrupt, different grids, no valid pixel), bad
            parameters, unwritable output, or a model output of the wrong shape.
    """
    import rasterio

    from eokit.core.raster import (
        BLOCK_SIZE,
        check_aligned,
        check_band_count,
        open_writer,
        raster_info,
    )

    if isinstance(inputs, str | os.PathLike):
        paths = [Path(inputs)]
    else:
        paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError("give at least one input raster", parameter="inputs")
    if int(band_width) == band_width and band_width > 0:
        band_width = -(-int(band_width) // BLOCK_SIZE) * BLOCK_SIZE  # whole output blocks
    settings, count = _settings(
        out_channels,
        tile,
        overlap,
        batch_size,
        blend,
        device,
        preprocess,
        postprocess,
        out_dtype,
        nodata,
        progress,
        band_width,
        align,
    )
    infos = [raster_info(p) for p in paths]
    if expected_bands is not None:
        for path, info in zip(paths, infos, strict=True):
            check_band_count(len(bands) if bands is not None else info[1], expected_bands, path)
    if len(paths) > 1:
        check_aligned(**{str(p): info[0] for p, info in zip(paths, infos, strict=True)})
    grid = infos[0][0]
    band_count = len(bands) if bands is not None else max(info[1] for info in infos)
    in_bytes = sum(np.dtype(info[2]).itemsize * band_count for info in infos)
    cache = _gdal_cache_bytes(
        min(grid.width, settings.band_width + 2 * settings.tile),
        settings.tile,
        in_bytes,
        count * settings.out_dtype.itemsize,
    )
    writer = open_writer(
        output,
        grid,
        count,
        settings.out_dtype,
        nodata=settings.nodata,
        cog=cog,
        band_names=band_names,
        compress=compress,
        tags={**(tags or {}), "eokit_tiling": f"tile={tile} overlap={overlap} blend={blend}"},
    )
    logger.info(
        "tiled inference on %s (%s) -> %s", ", ".join(map(str, paths)), grid.describe(), output
    )
    with rasterio.Env(GDAL_CACHEMAX=cache), writer as sink:
        source = _FileSource(paths, bands)
        threaded = _ThreadedSink(sink)
        try:
            valid_pixels = _stream(model, source, threaded, settings)
        except BaseException:
            threaded.abort()
            raise
        threaded.close()
        if valid_pixels == 0:
            raise InputError(
                "no valid input pixel (every pixel is nodata, masked, NaN or inf)",
                path=paths[0],
            )
    return Path(output)


def predict_array(
    model: Any,
    arrays: Sequence[np.ndarray],
    *,
    out_channels: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    preprocess: Preprocess | None = None,
    device: str = "cpu",
    blend: str = "cosine",
    valid: np.ndarray | None = None,
    postprocess: Postprocess | None = None,
    out_dtype: Any = "float32",
    nodata: float | None = None,
    progress: bool = False,
    band_width: int = 4096,
    align: int = 1,
) -> np.ndarray:
    """Tiled inference on in-memory (C, H, W) arrays with the same loop as :func:`predict_raster`.

    Args:
        model: ``nn.Module`` or callable returning (B, out_channels, h, w).
        arrays: One (C, H, W) array per model input, all with the same H, W.
        out_channels: Channels the model returns.
        tile: Window size in pixels.
        overlap: Overlap between windows.
        batch_size: Windows per model call.
        preprocess: Per window: list of (C, h, w) arrays -> list of tensors.
        device: Torch device (see :func:`resolve_device`).
        blend: "cosine", "linear" or "none".
        valid: Optional (H, W) bool mask (default: finite in every input).
        postprocess: Applied to each finished float32 block (see :func:`predict_raster`).
        out_dtype: Output dtype.
        nodata: Value for invalid pixels (default NaN for floats, dtype max for integers).
        progress: Show a progress bar.
        band_width: Column band width (see :func:`predict_raster`).
        align: Model stride (see :func:`predict_raster`).

    Returns:
        (out_channels or postprocessed bands, H, W) array.
    """
    items = [np.asarray(a) for a in arrays]
    if not items or any(a.ndim != 3 for a in items):
        raise InputError("give one or more (C, H, W) arrays", parameter="arrays")
    if len({a.shape[1:] for a in items}) != 1:
        shapes = [a.shape for a in items]
        raise InputError(f"arrays differ in height/width: {shapes}", parameter="arrays")
    if valid is not None and np.asarray(valid).shape != items[0].shape[1:]:
        raise InputError("valid mask shape differs from the arrays", parameter="valid")
    settings, count = _settings(
        out_channels,
        tile,
        overlap,
        batch_size,
        blend,
        device,
        preprocess,
        postprocess,
        out_dtype,
        nodata,
        progress,
        band_width,
        align,
    )
    source = _ArraySource(items, None if valid is None else np.asarray(valid, dtype=bool))
    sink = _ArraySink(count, source.height, source.width, settings.out_dtype)
    _stream(model, source, sink, settings)
    return sink.array
