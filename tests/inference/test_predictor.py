"""The Predictor on a tiny random-weights checkpoint: shapes, batching, volumes, TTA, repeats.

Results computed with different batch sizes, thread counts or kernels are compared within a
tolerance, never bit for bit: oneDNN picks kernels by batch size and CPU (AVX512 or AMX), and
their summation orders differ. In fp32 a logit then moves by a few 1e-7 relative; on the tiny
checkpoint (probabilities 0.506-0.509, slope 0.25) that is under 1e-6 in probability, so
``FP32_ATOL`` below leaves a margin of 20x, while the effects tested (a flip, a threshold) are
100x larger. Only the same call repeated on the same machine is compared exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.predictor import Predictor, VolumePrediction
from models.checkpoint import CheckpointError
from models.precision import resolve_precision
from tests.inference.samples import brain_like, make_checkpoint

FP32_ATOL = 2e-5


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint)


@pytest.mark.parametrize("shape", [(8, 8), (255, 257), (256, 256), (64, 64)])
def test_outputs_have_the_inputs_size(predictor: Predictor, shape: tuple[int, int]) -> None:
    result = predictor.predict_slice(brain_like(*shape))
    assert result.probabilities.shape == shape and result.probabilities.dtype == np.float32
    assert result.mask.shape == shape and result.mask.dtype == np.uint8
    assert set(np.unique(result.mask)) <= {0, 1}
    assert result.tumour_pixels == int(result.mask.sum())
    assert result.max_probability == pytest.approx(float(result.probabilities.max()))
    assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))


def test_16bit_inputs_are_accepted_and_grey_refused(predictor: Predictor) -> None:
    from data.preprocessing import ChannelError

    image = brain_like(64, 64)
    wide = image.astype(np.uint16) * 200
    assert np.allclose(predictor.predict_slice(wide).probabilities,
                       predictor.predict_slice(image).probabilities, atol=FP32_ATOL)
    for grey in (image[:, :, 1], image[:, :, :1], image[:, :, :2]):
        with pytest.raises(ChannelError, match="pre-contrast, FLAIR, post-contrast"):
            predictor.predict_slice(grey)


def test_constant_image_gives_a_valid_mask_without_nan(predictor: Predictor) -> None:
    result = predictor.predict_slice(np.zeros((40, 40, 3), np.uint8))
    assert not np.isnan(result.probabilities).any()
    assert result.mask.shape == (40, 40)


def test_batch_equals_one_by_one(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint, precision="fp32")
    images = [brain_like(64, 64, seed) for seed in range(2)] + [brain_like(100, 80, 9)]
    batched = predictor.predict_batch(images)
    single = [predictor.predict_slice(image) for image in images]
    for b, s in zip(batched, single, strict=True):
        assert b.probabilities.shape == s.probabilities.shape
        assert np.allclose(b.probabilities, s.probabilities, atol=FP32_ATOL, rtol=0)
    assert predictor.predict_batch([]) == []


def test_batched_masks_follow_the_threshold(spread_checkpoint: Path) -> None:
    """With steep logits, a mask pixel is tumour exactly where its own probability is > 0.5."""
    predictor = Predictor.from_checkpoint(spread_checkpoint)
    for result in predictor.predict_batch([brain_like(64, 64, seed) for seed in range(3)]):
        assert np.array_equal(result.mask, (result.probabilities > 0.5).astype(np.uint8))
        assert 0 < result.tumour_pixels < result.mask.size  # masks are not trivial here


def test_same_input_twice_gives_identical_bytes(predictor: Predictor) -> None:
    image = brain_like(70, 90, 3)
    a, b = predictor.predict_slice(image), predictor.predict_slice(image)
    assert a.probabilities.tobytes() == b.probabilities.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()


def test_volume_from_array_and_from_list(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint, batch_size=2, precision="fp32")
    slices = [brain_like(48, 56, seed) for seed in range(3)]
    from_list = predictor.predict_volume(slices)
    from_array = predictor.predict_volume(np.stack(slices, axis=2))  # H x W x Z x C
    assert isinstance(from_list, VolumePrediction)
    assert from_list.masks.shape == (48, 56, 3) and from_list.masks.dtype == np.uint8
    assert np.array_equal(from_list.masks, from_array.masks)  # same batches: same arithmetic
    for k, summary in enumerate(from_list.slices):
        one = predictor.predict_slice(slices[k])  # batch of 1 vs 2: within the tolerance
        assert np.allclose(from_list.probabilities[:, :, k], one.probabilities, atol=FP32_ATOL)
        assert summary.index == k
        assert summary.tumour_pixels == int(from_list.masks[:, :, k].sum())
    assert from_list.tumour_voxels == sum(s.tumour_pixels for s in from_list.slices)
    from data.preprocessing import ChannelError

    with pytest.raises(ChannelError, match="FLAIR"):  # H x W x Z: one sequence only
        predictor.predict_volume(np.stack([s[:, :, 0] for s in slices], axis=2))
    with pytest.raises(ValueError, match="same height and width"):
        predictor.predict_volume([slices[0], brain_like(10, 10)])


def test_tta_averages_with_the_flipped_pass(tiny_checkpoint: Path) -> None:
    plain = Predictor.from_checkpoint(tiny_checkpoint, precision="fp32")
    tta = Predictor.from_checkpoint(tiny_checkpoint, precision="fp32", tta=True)
    image = brain_like(64, 64, 5)
    p = plain.predict_slice(image).probabilities
    p_flipped = np.fliplr(plain.predict_slice(np.fliplr(image).copy()).probabilities)
    expected = (p + p_flipped) / 2
    # TTA runs both passes as one batch of 2: the batch-size tolerance applies.
    assert np.allclose(tta.predict_slice(image).probabilities, expected, atol=FP32_ATOL, rtol=0)
    assert np.abs(p - expected).max() > 10 * FP32_ATOL  # the flip really changes something


def test_prepare_matches_the_shared_preprocessing(predictor: Predictor) -> None:
    from data.preprocessing import preprocess_image

    image = brain_like(100, 90)
    prepared = predictor.prepare([image])
    assert prepared.shape == (1, 3, 64, 64) and prepared.dtype == torch.float32
    assert torch.equal(
        prepared[0], torch.from_numpy(preprocess_image(image, predictor.preprocessing))
    )


def test_card_and_model_version(predictor: Predictor, tiny_checkpoint: Path) -> None:
    card = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    assert predictor.card.weights_sha256 == card["weights_sha256"]
    assert predictor.model_version == f"test-resnet18-0.0.1+{card['weights_sha256'][:12]}"


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) in ("bf16", "fp32")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", cpu)  # type: ignore[arg-type]


def test_bad_arguments(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="threshold"):
        Predictor.from_checkpoint(tiny_checkpoint, threshold=1.0)


# ----------------------------------------------------------------- checkpoints that must fail


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        Predictor.from_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or modified"):
        Predictor.from_checkpoint(path)


def test_tampered_checkpoint(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "m.safetensors")
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="does not match its card"):
        Predictor.from_checkpoint(path)


def test_wrong_architecture_checkpoint(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "m.safetensors")
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["model"]["backbone"] = "resnet34"
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="does not fit"):
        Predictor.from_checkpoint(path)


def test_invalid_preprocessing_section(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "m.safetensors")
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["preprocessing"]["image_size"] = 33
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="preprocessing"):
        Predictor.from_checkpoint(path)


def test_pickle_file_is_never_unpickled(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "m.safetensors")
    marker = tmp_path / "pwned"
    payload = (
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )  # a pickle that would run a shell command if unpickled
    path.write_bytes(payload)
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.pop("weights_sha256")
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="safetensors"):
        Predictor.from_checkpoint(path)
    assert not marker.exists()


def test_bf16_weights_cast_once_give_the_autocast_result(tiny_checkpoint: Path) -> None:
    """Pre-cast convolution weights change speed only: bitwise the plain autocast output."""
    from models.checkpoint import load_checkpoint

    predictor = Predictor.from_checkpoint(tiny_checkpoint, precision="bf16", engine="torch")
    assert predictor.model.encoder.conv1.weight.dtype == torch.bfloat16
    model, _ = load_checkpoint(tiny_checkpoint)
    model = model.to(memory_format=torch.channels_last)
    x = predictor.prepare([brain_like(64, 64, s) for s in range(2)])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)).float())
    # Same kernels whether autocast casts the weights or they were cast once: agreement far
    # inside bf16's own rounding (2**-8 relative) is what is promised, not bit equality.
    assert np.allclose(predictor._forward(x), reference[:, 0].numpy(), atol=1e-4, rtol=0)
    fp32 = Predictor.from_checkpoint(tiny_checkpoint, precision="fp32", engine="torch")
    assert fp32.model.encoder.conv1.weight.dtype == torch.float32
