"""Builders of test inputs: random-weights checkpoints and image bytes in every format."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile
import torch
from PIL import Image

from data.preprocessing import PreprocessingConfig
from models.card import ModelCard
from models.checkpoint import save_checkpoint
from models.network import ModelConfig, build_model


def make_checkpoint(
    path: Path,
    backbone: str = "resnet18",
    image_size: int = 64,
    seed: int = 0,
    logit_scale: float | None = None,
    **card: Any,
) -> Path:
    """Write a random-weights checkpoint (weights + card) and return the weights path.

    ``logit_scale`` spreads the logits like a trained model's (random weights alone give
    logits near one constant, i.e. every probability near 0.5): see ``_spread_logits``.
    ``card`` adds or replaces card entries (e.g. ``split``, ``metrics``).
    """
    torch.manual_seed(seed)
    model_cfg = ModelConfig(backbone=backbone)  # type: ignore[arg-type]
    model = build_model(model_cfg)
    if logit_scale is not None:
        _spread_logits(model, logit_scale, image_size)
    save_checkpoint(path, model, ModelCard.model_validate({
        "name": f"test-{backbone}",
        "version": "0.0.1",
        "model": model_cfg,
        "preprocessing": PreprocessingConfig(image_size=image_size),
        **card,
    }))
    return path


def _spread_logits(model: torch.nn.Module, scale: float, image_size: int) -> None:
    """Scale the last convolution and centre its output on a reference slice, so that some
    pixels are confidently tumour, some confidently not, and a few lie near the threshold."""
    from data.preprocessing import preprocess_image

    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert head.bias is not None
    x = torch.from_numpy(
        preprocess_image(
            brain_like(image_size, image_size), PreprocessingConfig(image_size=image_size)
        )
    )[None]
    model.eval()
    with torch.no_grad():
        head.weight.mul_(scale)
        head.bias.mul_(scale)
        head.bias.sub_(model(x).median())


def brain_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A synthetic uint8 H x W x 3 slice: a textured ellipse (brain) on a zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (height / 2.5)) ** 2 + ((xx - width / 2) / (width / 2.5)) ** 2
    image = rng.integers(30, 220, size=(height, width, 3), dtype=np.uint8)
    image[inside > 1] = 0
    return image


def png_bytes(array: np.ndarray, mode: str | None = None, **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def tiff_bytes(array: np.ndarray, **kwargs: Any) -> bytes:
    if array.ndim == 3 and array.shape[2] in (3, 4):
        kwargs.setdefault("photometric", "rgb")
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def multipage_tiff(pages: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tif:
        for page in range(pages):
            tif.write(np.full((size, size), page, np.uint8))
    return buffer.getvalue()


def set_png_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR to declare another size (with a valid CRC): a decompression bomb."""
    ihdr = bytearray(data[12:29])  # type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return data[:12] + bytes(ihdr) + crc + data[33:]


def set_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a baseline JPEG's SOF0 to declare another size."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def tiff_declaring(width: int, height: int) -> bytes:
    """A 200-byte little-endian TIFF whose one strip claims ``width`` x ``height`` 8-bit pixels."""
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 8),  # Compression: deflate
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8 + 2 + 12 * 8 + 4),  # StripOffsets: right after the IFD
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if typ == 3:
            ifd += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, typ, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + zlib.compress(b"\x00" * 64)[:16]


def nifti_bytes(
    data: np.ndarray,
    affine: np.ndarray | None = None,
    compress: bool = False,
    **header: Any,
) -> bytes:
    """A single-file NIfTI-1 of ``data``; ``header`` fields are written as given (no rescaling)."""
    image = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    raw = bytearray(image.to_bytes())
    if header:
        hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw[:348])), check=False)
        for key, value in header.items():
            hdr[key] = value
        raw[:348] = hdr.binaryblock
    return gzip.compress(bytes(raw), mtime=0) if compress else bytes(raw)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    return buffer.getvalue()


def tiff_with_compression(array: np.ndarray, code: int) -> bytes:
    """A deflate TIFF whose Compression tag is rewritten to ``code`` (e.g. 50000, ZSTD): the
    pixel data cannot be decoded without that codec."""
    buffer = io.BytesIO(tiff_bytes(array, compression="zlib"))
    with tifffile.TiffFile(buffer, mode="r+b") as tif:
        tif.pages.first.tags["Compression"].overwrite(code)
    return buffer.getvalue()


def corrupt_tiff_data(data: bytes) -> bytes:
    """Flip the bits of a TIFF's (compressed) pixel data, leaving its header intact."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    blob = bytearray(data)
    for i in range(offset + 4, offset + count - 2):
        blob[i] ^= 0x5A
    return bytes(blob)


def hostile_niftis() -> dict[str, bytes]:
    """NIfTI volumes whose header fields are NaN, infinite or impossible (name -> bytes)."""
    vol = np.stack([brain_like(16, 16, s) for s in range(3)], axis=2)  # 16 x 16 x 3 x 3
    nan, inf = float("nan"), float("inf")
    zero_row = [0.0, 0.0, 0.0, 0.0]
    return {
        "vox_offset NaN": nifti_bytes(vol, vox_offset=nan),
        "vox_offset Inf": nifti_bytes(vol, vox_offset=inf),
        "qform NaN": nifti_bytes(vol, qform_code=1, quatern_b=nan),
        "sform NaN": nifti_bytes(vol, sform_code=1, srow_x=[nan, 0.0, 0.0, 0.0]),
        "sform all zero": nifti_bytes(
            vol, sform_code=1, srow_x=zero_row, srow_y=zero_row, srow_z=zero_row
        ),
        "pixdim NaN": nifti_bytes(vol, qform_code=1, pixdim=[1, nan, 1, 1, 1, 1, 1, 1]),
        "pixdim Inf": nifti_bytes(vol, qform_code=1, pixdim=[1, inf, 1, 1, 1, 1, 1, 1]),
        "xyzt_units 255": nifti_bytes(vol, xyzt_units=255),
        "quaternion not a rotation": nifti_bytes(
            vol, qform_code=1, quatern_b=0.9, quatern_c=0.9, quatern_d=0.9
        ),
    }
