"""The ImageNet evaluation survives unreadable images: skipped with the file named, or stopped by flag."""

import os

import pytest
import torch

pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402  (torchvision depends on Pillow)
from torchvision import transforms  # noqa: E402
from torchvision.datasets import ImageFolder  # noqa: E402

from fqvit_kernels import eval as fq_eval  # noqa: E402
from fqvit_kernels.imagefolder import (SkippingLoader, UnreadableImageError, calibration_batches,  # noqa: E402
                                       default_workers)


def _folder(root, per_class=3, broken=("b/img1.jpg",)):
    """Two classes of small JPEGs; the files named in ``broken`` are cut in half."""
    gen = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (12, 12, 3), generator=gen, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / cls / f"img{i}.jpg", quality=90)
    for name in broken:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])
    return ImageFolder(str(root), transform=transforms.ToTensor())


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_jpeg_is_skipped_and_named(tmp_path, workers):
    dataset = _folder(tmp_path)
    loader = SkippingLoader(dataset, batch_size=4, workers=workers)
    batches = list(loader)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert len(images) == 5 and labels.tolist() == [0, 0, 0, 1, 1]
    assert len(loader.skipped) == 1
    summary = loader.summary()
    assert summary.startswith("skipped 1 unreadable image(s)") and "img1.jpg" in summary
    # the same file fails on every pass: a second pass yields the same images and labels
    again = list(loader)
    assert torch.equal(torch.cat([b[1] for b in again]), labels) and len(loader.skipped) == 1


def test_strict_images_stops_with_the_path(tmp_path):
    dataset = _folder(tmp_path)
    with pytest.raises(UnreadableImageError, match=r"b/img1\.jpg"):
        list(SkippingLoader(dataset, batch_size=2, workers=0, strict=True))
    with pytest.raises(UnreadableImageError, match=r"b/img1\.jpg"):
        calibration_batches(dataset, count=3, batch_size=2, strict=True)


def test_calibration_replaces_unreadable_images(tmp_path):
    dataset = _folder(tmp_path)
    hit = 0
    for seed in range(8):  # the random order reaches the broken file before the 5th readable one in most seeds
        skipped = []
        batches = calibration_batches(dataset, count=1, batch_size=5, seed=seed, skipped=skipped)
        assert [b.shape[0] for b in batches] == [5]
        assert all("b/img1.jpg" in error for error in skipped) and len(skipped) <= 1
        hit += len(skipped)
    assert hit > 0
    with pytest.raises(ValueError, match="needs 6 readable images"):
        calibration_batches(dataset, count=2, batch_size=3)


def test_scores_use_the_labels_of_the_images_that_were_read(tmp_path):
    """Predictions and labels stay aligned when a file in the middle is dropped."""
    dataset = _folder(tmp_path, broken=("a/img1.jpg",))

    class ClassOfMeanPixel(torch.nn.Module):  # a "model" that reads the label back out of the image
        def forward(self, x):
            return torch.stack([x.new_zeros(len(x)), x.new_ones(len(x))], dim=1) * (x.flatten(1)[:, 0:1] >= 0)

    truth = SkippingLoader(dataset, batch_size=2, workers=0)
    preds, labels = fq_eval.predict(ClassOfMeanPixel(), truth, return_labels=True)
    assert labels.tolist() == [0, 0, 1, 1, 1] and len(preds) == len(labels)
    _, top1 = fq_eval._top1(ClassOfMeanPixel(), truth, None, "cpu")
    assert top1 == pytest.approx(60.0)
    with pytest.raises(ValueError, match="5 predictions but 4 labels"):
        fq_eval._top1(ClassOfMeanPixel(), [torch.zeros(5, 3, 12, 12)], torch.zeros(4, dtype=torch.long), "cpu")


def test_default_workers_never_exceed_the_cores(monkeypatch):
    for cores, expected in [(1, 1), (2, 2), (64, 4), (None, 1)]:
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert default_workers() == expected
    with pytest.raises(SystemExit, match="--workers"):
        fq_eval.main(["--workers", "-1"])
