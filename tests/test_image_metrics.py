"""FID / KID / CLIP score: torchmetrics plumbing, reference caching, warnings and weight errors."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import linalg

from interactdiffusion.evaluation.image_metrics import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    ClipScore,
    ImageQualityMetrics,
    InceptionFeatures,
    KIDSubsetWarning,
    MetricWeightsError,
    TinyFeatureExtractor,
    build_image_metrics,
    reference_cache_path,
    reference_key,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def textured_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """Smooth random images (random features of pure noise are nearly constant)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 255
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear").round().to(torch.uint8)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID written out independently (scipy's matrix square root)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture()
def tiny():
    return TinyFeatureExtractor(num_features=8, seed=0, input_size=32)


def test_tiny_extractor_is_deterministic_from_its_seed():
    images = textured_images(4, seed=1)
    torch.manual_seed(123)
    a = TinyFeatureExtractor(num_features=8, seed=5)(images)
    torch.manual_seed(456)
    b = TinyFeatureExtractor(num_features=8, seed=5)(images)
    c = TinyFeatureExtractor(num_features=8, seed=6)(images)
    assert a.shape == (4, 8) and torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(TypeError, match="uint8"):
        TinyFeatureExtractor()(images.float())


def test_fid_of_a_set_against_itself_is_zero_and_matches_a_direct_computation(tiny):
    real = textured_images(40, seed=1)
    other = (textured_images(40, seed=2) // 2) + 64  # another distribution: lower contrast
    same = ImageQualityMetrics(tiny, kid_subset_size=20)
    same.update_real(real[:25])
    same.update_real(real[25:])  # batching does not matter
    same.update_fake(real)
    result = same.compute()
    assert result["fid"] == pytest.approx(0.0, abs=1e-3)
    assert result["num_real"] == result["num_fake"] == 40

    diff = ImageQualityMetrics(tiny, kid_subset_size=20)
    diff.update_real(real)
    diff.update_fake(other)
    fid, kid = diff.compute()["fid"], diff.compute()["kid_mean"]
    assert abs(result["kid_mean"]) < 0.1 * kid  # unbiased KID: noise around 0 for the same set
    with torch.no_grad():
        expected = frechet_distance(tiny(real).double().numpy(), tiny(other).double().numpy())
    assert fid > 1e-2 and fid == pytest.approx(expected, rel=1e-3)


def test_kid_subset_shrinks_to_the_sample_count_with_a_warning(tiny):
    metrics = ImageQualityMetrics(tiny, fid=False, kid_subsets=5)  # default subset size 1000
    metrics.update_real(textured_images(30, seed=1))
    metrics.update_fake(textured_images(24, seed=2))
    with pytest.warns(KIDSubsetWarning, match="1000 to 24"):
        result = metrics.compute()
    assert result["kid_subset_size"] == 24 and math.isfinite(result["kid_mean"]) and result["kid_std"] >= 0

    enough = ImageQualityMetrics(tiny, fid=False, kid_subsets=5, kid_subset_size=20)
    enough.update_real(textured_images(30, seed=1))
    enough.update_fake(textured_images(24, seed=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", KIDSubsetWarning)
        first = enough.compute()
    assert first["kid_subset_size"] == 20


def test_kid_is_reproducible_from_its_seed(tiny):
    values = []
    for _ in range(2):
        torch.manual_seed(len(values))  # the global RNG must not matter
        metrics = ImageQualityMetrics(tiny, fid=False, kid_subsets=4, kid_subset_size=10, seed=7)
        metrics.update_real(textured_images(20, seed=1))
        metrics.update_fake(textured_images(20, seed=2))
        values.append(metrics.compute()["kid_mean"])
    assert values[0] == values[1]


def test_too_few_images_give_nan_with_a_warning(tiny):
    metrics = ImageQualityMetrics(tiny)
    metrics.update_real(textured_images(1, seed=1))
    metrics.update_fake(textured_images(1, seed=2))
    with pytest.warns(UserWarning):
        result = metrics.compute()
    assert math.isnan(result["fid"]) and math.isnan(result["kid_mean"])


def test_reference_features_are_cached_and_reused(tmp_path, tiny):
    real, fake = textured_images(12, seed=1), textured_images(12, seed=2)
    ids = [f"HICO_test2015_{i:08d}.jpg" for i in range(12)]
    calls = []

    def batches():
        calls.append(1)
        return [real[:5], real[5:]]

    first = ImageQualityMetrics(tiny, kid_subset_size=6, cache_dir=tmp_path)
    assert first.add_reference(ids, batches, resolution=512) is False
    first.update_fake(fake)
    path = reference_cache_path(tmp_path, reference_key(tiny.identity, ids, 512))
    assert path.is_file() and len(calls) == 1

    def must_not_run():
        raise AssertionError("the cached reference should have been used")

    second = ImageQualityMetrics(tiny, kid_subset_size=6, cache_dir=tmp_path)
    assert second.add_reference(list(reversed(ids)), must_not_run, resolution=512) is True  # order-free key
    second.update_fake(fake)
    assert second.compute() == first.compute()

    live = ImageQualityMetrics(tiny, kid_subset_size=6)  # no cache: same numbers
    live.update_real(real)
    live.update_fake(fake)
    assert live.compute()["fid"] == pytest.approx(first.compute()["fid"], rel=1e-6)

    third = ImageQualityMetrics(tiny, kid_subset_size=6, cache_dir=tmp_path)
    assert third.add_reference(ids, batches, resolution=256) is False and len(calls) == 2  # another key
    other_net = TinyFeatureExtractor(num_features=8, seed=1, input_size=32)
    assert reference_key(other_net.identity, ids, 512) != reference_key(tiny.identity, ids, 512)


def test_reference_count_must_match_the_ids(tmp_path, tiny):
    metrics = ImageQualityMetrics(tiny, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="3 images for 4 image ids"):
        metrics.add_reference(["a", "b", "c", "d"], lambda: [textured_images(3, seed=0)], resolution=512)


def test_reset_fake_keeps_the_reference(tiny):
    real = textured_images(20, seed=1)
    metrics = ImageQualityMetrics(tiny, kid=False)
    metrics.update_real(real)
    metrics.update_fake(textured_images(20, seed=2))
    far = metrics.compute()["fid"]
    metrics.reset_fake()
    metrics.update_fake(real)
    result = metrics.compute()
    assert result["num_real"] == 20 and result["num_fake"] == 20
    assert result["fid"] == pytest.approx(0.0, abs=1e-3) and far > 1e-2


def test_inputs_must_be_uint8(tiny):
    with pytest.raises(TypeError, match="uint8"):
        ImageQualityMetrics(tiny).update_fake(torch.rand(2, 3, 32, 32))


def test_missing_inception_weights_name_the_file_and_where_it_goes(tmp_path):
    missing = tmp_path / "weights" / INCEPTION_WEIGHTS_FILE
    with pytest.raises(MetricWeightsError) as err:
        InceptionFeatures(missing)
    assert isinstance(err.value, FileNotFoundError)
    assert str(missing) in str(err.value) and INCEPTION_WEIGHTS_URL in str(err.value)
    with pytest.raises(MetricWeightsError, match=INCEPTION_WEIGHTS_FILE):
        build_image_metrics(extractor="inception", inception_weights=None)


def test_inception_weights_with_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.save({"weights": torch.ones(1), "extra": Path("x")}, path)
    with pytest.raises(MetricWeightsError, match="not a plain Inception state dict"):
        InceptionFeatures(path)


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory) -> Path:
    """torch-fidelity's Inception layout with random weights (the real file cannot be downloaded here)."""
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

    with mock.patch.object(tf_inception, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        torch.manual_seed(0)
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("weights") / INCEPTION_WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path


def test_inception_path_equals_torchmetrics_fid_with_local_weights(random_inception_file, monkeypatch):
    from torchmetrics.image.fid import FrechetInceptionDistance

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    real, fake = textured_images(3, seed=1, size=64), textured_images(3, seed=2, size=64)
    features = InceptionFeatures(random_inception_file)(real[:1])
    assert features.shape == (1, 2048) and torch.isfinite(features).all()

    # the 64-d pool features keep FID's matrix square root small; the network path is the same
    metrics = build_image_metrics(
        extractor="inception", inception_weights=str(random_inception_file), inception_feature=64, kid=False
    )
    assert metrics.extractor.num_features == 64 and not metrics.extractor.net.use_antialias
    metrics.update_real(real)
    metrics.update_fake(fake)
    ours = metrics.compute()["fid"]

    direct = FrechetInceptionDistance(
        feature=64, feature_extractor_weights_path=str(random_inception_file), antialias=False
    )
    direct.update(real, real=True)
    direct.update(fake, real=False)
    assert ours == pytest.approx(float(direct.compute()), rel=1e-5)


def test_metric_configs_instantiate(tmp_path):
    from hydra.utils import instantiate

    paths = OmegaConf.create({"paths": {"weights_dir": str(tmp_path / "w"), "cache_dir": str(tmp_path / "c")}})
    tiny_cfg = OmegaConf.merge(paths, {"metrics": OmegaConf.load(CONFIGS / "metrics" / "tiny.yaml")})
    metrics = instantiate(tiny_cfg.metrics)
    assert isinstance(metrics, ImageQualityMetrics) and metrics.extractor.num_features == 16
    assert Path(metrics.cache_dir) == tmp_path / "c" / "fid_reference"

    inception_cfg = OmegaConf.merge(paths, {"metrics": OmegaConf.load(CONFIGS / "metrics" / "inception.yaml")})
    with pytest.raises(Exception) as err:  # Hydra wraps it, keeping the message
        instantiate(inception_cfg.metrics)
    assert isinstance(err.value.__cause__ or err.value, MetricWeightsError)
    assert str(tmp_path / "w" / INCEPTION_WEIGHTS_FILE) in str(err.value)


# -- CLIP score ------------------------------------------------------------------------------------------------------
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_clip_score_with_local_weights(tmp_path):
    import open_clip

    config = tmp_path / "tiny-test-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip")
    weights = tmp_path / "tiny_clip.pth"
    torch.save(model.state_dict(), weights)

    clip = ClipScore(weights, model_name="tiny-test-clip", device="cpu")
    images = textured_images(3, seed=1, size=40)
    prompts = ["a person riding a bicycle", "a person holding a cup", "a person riding a horse"]
    scores = clip.scores(images, prompts)
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 100)).all()
    clip.update(images, prompts)
    assert clip.compute() == pytest.approx(float(scores.mean()), rel=1e-6)

    with pytest.raises(MetricWeightsError, match="CLIP weights not found"):
        ClipScore(tmp_path / "missing.safetensors", model_name="tiny-test-clip")
