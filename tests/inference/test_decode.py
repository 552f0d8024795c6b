"""Decoding uploads: sniffing, conversions, corrupt data, bombs, NIfTI, zips (RELIABILITY.md)."""

from __future__ import annotations

import gzip
import io
import tracemalloc
from collections.abc import Callable

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from inference.decode import (
    DecodeError,
    DecodeLimits,
    UnsupportedFormat,
    WrongKind,
    decode_nifti,
    decode_slice,
    decode_volume,
    sniff,
    voxel_spacing_mm,
    voxel_volume_mm3,
)
from inference.outputs import mask_to_nifti
from tests.inference.samples import (
    brain_like,
    corrupt_tiff_data,
    hostile_niftis,
    jpeg_bytes,
    multipage_tiff,
    nifti_bytes,
    png_bytes,
    set_jpeg_size,
    set_png_size,
    tiff_bytes,
    tiff_declaring,
    tiff_with_compression,
    zip_bytes,
)

RGB = brain_like(32, 40)


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by Python/numpy while ``fn`` runs (it may raise)."""
    tracemalloc.start()
    try:
        fn()
    except (DecodeError, UnsupportedFormat):
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# ----------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"GIF89a" + b"\x00" * 40, "GIF"),
        (b"BM" + b"\x00" * 60, "BMP"),
        (b"%PDF-1.7\n...", "PDF"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"<svg></svg>", "SVG"),
        (b"\x00" * 128 + b"DICM" + b"\x00" * 200, "DICOM file is read as part of its study"),
        (np.random.default_rng(0).bytes(1000), "unrecognised"),
    ],
)
def test_unsupported_formats_are_named(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedFormat, match=name):
        decode_slice(data)


def test_format_comes_from_bytes_not_names() -> None:
    assert sniff(png_bytes(RGB)) == "png"
    assert sniff(jpeg_bytes(RGB)) == "jpeg"
    assert sniff(tiff_bytes(RGB)) == "tiff"
    assert sniff(nifti_bytes(np.zeros((4, 4, 2), np.int16))) == "nifti"
    assert sniff(nifti_bytes(np.zeros((4, 4, 2), np.int16), compress=True)) == "gzip"
    assert sniff(zip_bytes({"a.png": png_bytes(RGB)})) == "zip"


def test_zero_bytes_is_an_error() -> None:
    with pytest.raises(DecodeError, match="empty"):
        decode_slice(b"")


def test_zip_where_a_slice_is_expected_names_the_volume_endpoint() -> None:
    with pytest.raises(UnsupportedFormat, match="volume"):
        decode_slice(zip_bytes({"a.png": png_bytes(RGB)}))


# ----------------------------------------------------------------- conversions


def test_rgb_png_and_tiff_round_trip_exactly() -> None:
    assert np.array_equal(decode_slice(png_bytes(RGB)), RGB)
    assert np.array_equal(decode_slice(tiff_bytes(RGB, compression="zlib")), RGB)


def test_jpeg_keeps_shape() -> None:
    out = decode_slice(jpeg_bytes(RGB))
    assert out.shape == RGB.shape and out.dtype == np.uint8


def test_16bit_grey_png_is_not_reduced() -> None:
    grey = (np.arange(32 * 40).reshape(32, 40) * 50).astype(np.uint16)
    out = decode_slice(png_bytes(grey))
    assert out.dtype == np.uint16 and out.max() == grey.max() and np.array_equal(out, grey)


def test_16bit_colour_png_is_refused_rather_than_reduced() -> None:
    import cv2  # the one common writer of 16-bit colour PNG (a dependency of albumentations)

    ok, encoded = cv2.imencode(".png", (RGB.astype(np.uint16) * 200))
    assert ok
    with pytest.raises(DecodeError, match="16-bit colour PNG"):
        decode_slice(encoded.tobytes())


def test_signed_and_float_tiff_keep_their_values() -> None:
    signed = np.array([[-1000, 0], [5, 32000]], dtype=np.int16).repeat(4, 0).repeat(4, 1)
    out = decode_slice(tiff_bytes(signed))
    assert out.dtype == np.int16 and out.min() == -1000 and out.max() == 32000
    floats = np.linspace(-3.5, 1e6, 64, dtype=np.float32).reshape(8, 8)
    assert np.array_equal(decode_slice(tiff_bytes(floats)), floats)


@pytest.mark.parametrize("compression", ["tiff_lzw", "packbits", "tiff_adobe_deflate"])
def test_common_tiff_compressions(compression: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, format="TIFF", compression=compression)
    assert np.array_equal(decode_slice(buffer.getvalue()), RGB)
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode_slice(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_float16_tiff_is_widened() -> None:
    out = decode_slice(tiff_bytes(np.full((8, 8), 1.5, np.float16)))
    assert out.dtype == np.float32 and float(out[0, 0]) == 1.5


def test_rgba_la_palette_and_bilevel_conversions() -> None:
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])
    assert np.array_equal(decode_slice(png_bytes(rgba)), RGB)  # alpha dropped
    grey = RGB[:, :, 1]
    la = np.dstack([grey, np.full_like(grey, 9)])
    assert np.array_equal(decode_slice(png_bytes(la, mode="LA")), grey)
    palette_image = Image.fromarray(RGB).quantize(colors=16)
    buffer = io.BytesIO()
    palette_image.save(buffer, format="PNG")
    expected = np.asarray(palette_image.convert("RGB"))
    assert np.array_equal(decode_slice(buffer.getvalue()), expected)  # through the palette
    bilevel = Image.fromarray(grey > 100).convert("1")
    buffer = io.BytesIO()
    bilevel.save(buffer, format="PNG")
    out = decode_slice(buffer.getvalue())
    assert out.shape == grey.shape and set(np.unique(out)) <= {0, 255}


def test_planar_tiff_becomes_channels_last() -> None:
    planar = np.ascontiguousarray(RGB.transpose(2, 0, 1))
    out = decode_slice(tiff_bytes(planar, planarconfig="separate", photometric="rgb"))
    assert np.array_equal(out, RGB)


def test_tiny_odd_and_constant_images_decode_at_their_size() -> None:
    assert decode_slice(png_bytes(brain_like(8, 8))).shape == (8, 8, 3)
    assert decode_slice(tiff_bytes(brain_like(255, 257))).shape == (255, 257, 3)
    zeros = decode_slice(png_bytes(np.zeros((16, 16), np.uint8)))
    assert zeros.shape == (16, 16) and not zeros.any()


def test_extreme_aspect_ratio_is_refused() -> None:
    with pytest.raises(DecodeError, match="aspect ratio"):
        decode_slice(png_bytes(np.zeros((4, 400), np.uint8)))


def test_nan_in_float_tiff_is_refused() -> None:
    bad = np.ones((8, 8), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(DecodeError, match="NaN"):
        decode_slice(tiff_bytes(bad))
    huge = np.full((8, 8), 1e300, np.float64)  # finite in float64, infinite as float32
    with pytest.raises(DecodeError, match="too large"):
        decode_slice(tiff_bytes(huge))


# ----------------------------------------------------------------- corrupt and hostile


@pytest.mark.parametrize("make", [png_bytes, jpeg_bytes, tiff_bytes])
def test_truncated_images_are_422(make: Callable[[np.ndarray], bytes]) -> None:
    data = make(brain_like(64, 64))
    for cut in (len(data) // 2, 40):
        with pytest.raises(DecodeError, match="truncated|corrupt"):
            decode_slice(data[:cut])


def test_uncompressed_truncated_tiff_is_422() -> None:
    data = tiff_bytes(brain_like(64, 64))  # uncompressed: strips would read past the end
    with pytest.raises(DecodeError, match="truncated"):
        decode_slice(data[: len(data) - 500])


@pytest.mark.parametrize("magic", [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*"])
def test_random_bytes_behind_a_valid_signature_are_422(magic: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_slice(magic + np.random.default_rng(1).bytes(2000))


@pytest.mark.parametrize(
    "bomb",
    [
        set_png_size(png_bytes(brain_like(8, 8)), 30000, 30000),
        set_png_size(png_bytes(brain_like(8, 8)), 3000, 3000),  # under Pillow's cap, over ours
        set_jpeg_size(jpeg_bytes(brain_like(16, 16)), 30000, 30000),
        tiff_declaring(30000, 30000),
    ],
    ids=["png-30000", "png-3000", "jpeg-30000", "tiff-30000"],
)
def test_decompression_bombs_are_refused_from_the_header(bomb: bytes) -> None:
    assert len(bomb) < 2000
    with pytest.raises(DecodeError, match="pixels"):
        decode_slice(bomb)
    assert peak_memory(lambda: decode_slice(bomb)) < 5 * 2**20


def test_pixel_cap_is_configurable() -> None:
    with pytest.raises(DecodeError, match="limit is 100"):
        decode_slice(png_bytes(brain_like(16, 16)), DecodeLimits(max_pixels=100))


def test_multipage_tiff_and_animated_png_are_refused() -> None:
    with pytest.raises(DecodeError, match="2 pages"):
        decode_slice(multipage_tiff(2))
    frames = [Image.fromarray(brain_like(16, 16, s)) for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(DecodeError, match="3 frames"):
        decode_slice(buffer.getvalue())


# ----------------------------------------------------------------- NIfTI


def test_nifti_slice_and_volume_shapes() -> None:
    grey = np.arange(20 * 24, dtype=np.int16).reshape(20, 24)
    assert np.array_equal(decode_slice(nifti_bytes(grey)), grey)
    assert np.array_equal(decode_slice(nifti_bytes(grey[:, :, None], compress=True)), grey)
    rgb = np.random.default_rng(0).random((20, 24, 1, 3)).astype(np.float32)
    assert np.array_equal(decode_slice(nifti_bytes(rgb)), rgb[:, :, 0, :])
    vol = np.random.default_rng(0).integers(0, 500, (20, 24, 5, 3)).astype(np.uint16)
    decoded = decode_volume(nifti_bytes(vol, affine=np.diag([0.5, 0.5, 3.0, 1.0])))
    assert np.array_equal(decoded.data, vol)
    assert decoded.zooms == (0.5, 0.5, 3.0)
    assert np.allclose(decoded.affine, np.diag([0.5, 0.5, 3.0, 1.0]))


def test_volume_where_a_slice_is_expected_and_the_reverse() -> None:
    with pytest.raises(WrongKind, match="volume") as info:
        decode_slice(nifti_bytes(np.zeros((8, 8, 4), np.int16)))
    assert info.value.got == "volume"
    with pytest.raises(WrongKind, match="single slice") as info2:
        decode_volume(nifti_bytes(np.zeros((8, 8), np.int16)))
    assert info2.value.got == "slice"
    with pytest.raises(UnsupportedFormat, match="not a volume"):
        decode_volume(png_bytes(RGB))


def test_decode_nifti_takes_both_kinds() -> None:
    assert decode_nifti(nifti_bytes(np.zeros((8, 8), np.int16))).data.shape == (8, 8, 1)
    assert decode_nifti(nifti_bytes(np.zeros((8, 8, 3), np.int16))).data.shape == (8, 8, 3)


def test_nifti_declaring_huge_dimensions_is_refused_before_allocating() -> None:
    data = nifti_bytes(np.zeros((4, 4, 4), np.int16), dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])
    with pytest.raises(DecodeError, match="values"):
        decode_volume(data)
    assert peak_memory(lambda: decode_volume(data)) < 2 * 2**20
    gz = gzip.compress(data)
    with pytest.raises(DecodeError, match="values"):
        decode_volume(gz)


def test_gzip_bomb_is_inflated_only_as_far_as_the_header_declares() -> None:
    small = nifti_bytes(np.zeros((8, 8, 2), np.uint8))
    bomb = gzip.compress(small + b"\x00" * (64 * 2**20), compresslevel=1)  # 64 MiB of padding
    assert len(bomb) < 2**20
    peak = peak_memory(lambda: decode_volume(bomb))
    assert decode_volume(bomb).data.shape == (8, 8, 2)
    assert peak < 8 * 2**20


def test_nifti_over_the_decompressed_byte_cap_is_refused() -> None:
    data = nifti_bytes(np.zeros((64, 64, 64), np.float64), compress=True)  # 2 MiB inflated
    with pytest.raises(DecodeError, match="bytes"):
        decode_volume(data, DecodeLimits(max_decompressed_bytes=2**20))


def test_truncated_and_corrupt_gzip_nifti_are_422() -> None:
    raw = nifti_bytes(np.ones((16, 16, 4), np.int16))
    with pytest.raises(DecodeError, match="truncated"):
        decode_volume(raw[:-100])
    gz = gzip.compress(raw)
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        decode_volume(gz[: len(gz) // 2])
    with pytest.raises(UnsupportedFormat, match="NIfTI"):
        decode_volume(gzip.compress(b"hello" * 100))


def test_nan_and_inf_voxels_are_refused() -> None:
    vol = np.ones((8, 8, 3), np.float32)
    vol[1, 1, 1] = np.inf
    with pytest.raises(DecodeError, match="NaN or infinite"):
        decode_volume(nifti_bytes(vol))
    vol[1, 1, 1] = np.nan
    with pytest.raises(DecodeError, match="NaN or infinite"):
        decode_volume(nifti_bytes(vol))


def test_nifti_scaling_rules() -> None:
    ints = np.full((8, 8, 2), 10, np.int16)
    # NIfTI-1: slope 0 or NaN means "unscaled" (nibabel itself writes NaN).
    assert decode_volume(nifti_bytes(ints, scl_slope=0.0, scl_inter=0.0)).data.max() == 10
    assert decode_volume(nifti_bytes(ints, scl_slope=np.nan, scl_inter=np.nan)).data.max() == 10
    scaled = decode_volume(nifti_bytes(ints, scl_slope=2.0, scl_inter=5.0)).data
    assert float(scaled.max()) == pytest.approx(25.0)
    with pytest.raises(DecodeError, match="ambiguous"):
        decode_volume(nifti_bytes(ints, scl_slope=0.0, scl_inter=5.0))
    with pytest.raises(DecodeError, match="ambiguous"):
        decode_volume(nifti_bytes(ints, scl_slope=np.nan, scl_inter=3.0))
    with pytest.raises(DecodeError, match="infinite"):
        decode_volume(nifti_bytes(ints, scl_slope=np.inf))
    with pytest.raises(DecodeError, match="NaN or infinite|too large"):
        decode_volume(nifti_bytes(ints, scl_slope=3e38, scl_inter=0.0))  # overflows float32


@pytest.mark.parametrize("code", [1, 32, 128, 1536, 1792, 2304])
def test_unsupported_nifti_datatypes_are_refused(code: int) -> None:
    data = nifti_bytes(np.zeros((8, 8, 2), np.uint8), datatype=code)
    with pytest.raises(DecodeError, match=f"datatype code {code}"):
        decode_volume(data)


def test_nifti_layout_errors() -> None:
    with pytest.raises(DecodeError, match="channels"):
        decode_volume(nifti_bytes(np.zeros((8, 8, 3, 5), np.uint8)))
    with pytest.raises(DecodeError, match="header-only"):
        decode_volume(nifti_bytes(np.zeros((8, 8, 3), np.uint8), magic=b"ni1"))


def test_nifti_mask_round_trip_with_nibabel() -> None:
    img = nib.Nifti1Image(np.zeros((8, 8, 3), np.uint8), np.diag([2.0, 2.0, 4.0, 1.0]))
    out = decode_volume(gzip.compress(img.to_bytes()))
    assert out.data.shape == (8, 8, 3) and out.zooms == (2.0, 2.0, 4.0)


# ----------------------------------------------------------------- zip of slices


def test_zip_of_slices_in_natural_order_skipping_masks() -> None:
    files = {f"TCGA_X_1_{i}.tif": tiff_bytes(np.full((16, 16, 3), i, np.uint8)) for i in (1, 2, 10)}
    files["TCGA_X_1_2_mask.tif"] = tiff_bytes(np.zeros((16, 16), np.uint8))
    files["__MACOSX/._TCGA_X_1_1.tif"] = b"junk"
    files[".DS_Store"] = b"junk"
    vol = decode_volume(zip_bytes(files))
    assert vol.source == "zip" and vol.data.shape == (16, 16, 3, 3)
    assert [int(vol.data[0, 0, k, 0]) for k in range(3)] == [1, 2, 10]


def test_zip_errors() -> None:
    with pytest.raises(DecodeError, match="shape"):
        decode_volume(zip_bytes({"a_1.png": png_bytes(RGB), "a_2.png": png_bytes(RGB[:16])}))
    with pytest.raises(DecodeError, match="no slice"):
        decode_volume(zip_bytes({"a_1_mask.png": png_bytes(RGB)}))
    with pytest.raises(DecodeError, match="limit is 2"):
        decode_volume(
            zip_bytes({f"s_{i}.png": png_bytes(RGB) for i in range(3)}),
            DecodeLimits(max_slices=2),
        )
    with pytest.raises(DecodeError, match="slice 0 of the zip"):
        decode_volume(zip_bytes({"a_1.png": b"GIF89a" + b"\x00" * 10}))
    nested = zip_bytes({"inner.nii": nifti_bytes(np.zeros((8, 8, 2), np.uint8))})
    with pytest.raises(DecodeError, match="inside the zip"):
        decode_volume(nested)
    good = zip_bytes({"a_1.png": png_bytes(RGB)})
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        decode_volume(good[: len(good) // 2])


def test_zip_bomb_is_refused_from_declared_sizes() -> None:
    big = zip_bytes({"s_1.tif": tiff_bytes(np.zeros((1024, 1024), np.uint8))})  # 1 MiB inflated
    with pytest.raises(DecodeError, match="inflates"):
        decode_volume(big, DecodeLimits(max_decompressed_bytes=100_000))


# ----------------------------------------------------------------- decoder failures (issue 12)


@pytest.mark.parametrize(("code", "name"), [(9, "JBIG_BW"), (12345, "12345")])
def test_tiff_with_a_compression_no_codec_reads_is_a_decode_error(code: int, name: str) -> None:
    """No installed codec (imagecodecs, Pillow) reads it: a 422 naming it, not a 500."""
    with pytest.raises(DecodeError, match=rf"compression \({name}\) cannot be decoded here"):
        decode_slice(tiff_with_compression(RGB, code))


def test_tiff_codecs_beyond_deflate_are_installed() -> None:
    """imagecodecs (a dependency) decodes what tifffile alone cannot, ZSTD for one."""
    assert np.array_equal(decode_slice(tiff_bytes(RGB, compression="zstd")), RGB)
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        decode_slice(tiff_with_compression(RGB, 50000))  # deflate bytes labelled ZSTD


def test_tiff_with_corrupt_lzma_data_is_a_decode_error() -> None:
    data = tiff_bytes(RGB, compression="lzma")
    assert np.array_equal(decode_slice(data), RGB)
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        decode_slice(corrupt_tiff_data(data))


@pytest.mark.parametrize("name", sorted(hostile_niftis()))
def test_nifti_with_non_finite_or_impossible_geometry_is_refused(name: str) -> None:
    data = hostile_niftis()[name]
    for blob in (data, gzip.compress(data)):
        with pytest.raises(DecodeError, match="NIfTI header") as info:
            decode_volume(blob)
        message = str(info.value).lower()
        assert "nan" not in message and "inf" not in message.replace("info", "")
        assert "255" not in message  # field names only, never header values


def test_every_accepted_nifti_geometry_can_be_written_back() -> None:
    """The output mask's geometry is validated up front: writing it never fails afterwards."""
    affine = np.array([[0.0, -0.9, 0, 10], [0.9, 0.0, 0, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    vol = decode_volume(nifti_bytes(np.zeros((8, 8, 3), np.int16), affine, sform_code=2))
    mask = nib.Nifti1Image.from_bytes(
        mask_to_nifti(np.zeros((8, 8, 3), np.uint8), vol.affine, vol.header).to_bytes()
    )
    assert np.allclose(mask.affine, affine) and mask.header["sform_code"] == 2


@pytest.mark.parametrize(
    ("units", "expected"),
    [(0, (0.5, 0.5, 2.0)), (2, (0.5, 0.5, 2.0)), (1, (500.0, 500.0, 2000.0)), (3, None)],
)
def test_voxel_spacing_follows_the_header_units_and_the_sane_range(
    units: int, expected: tuple[float, float, float] | None
) -> None:
    """unknown and mm units are mm, metres are scaled (then over the range), microns too small."""
    volume = np.stack([RGB] * 3, axis=2)
    data = nifti_bytes(volume, np.diag([0.5, -0.5, 2.0, 1.0]), xyzt_units=units)
    decoded = decode_volume(data)
    spacing, reason = voxel_spacing_mm(decoded)
    mm3, _ = voxel_volume_mm3(decoded)
    if expected is None or max(expected) > 100:
        assert spacing is None and mm3 is None and "outside" in str(reason)
    else:
        assert spacing == pytest.approx(expected) and mm3 == pytest.approx(np.prod(expected))
