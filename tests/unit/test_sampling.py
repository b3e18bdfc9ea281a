"""Training minibatches: label masks, dihedral augmentation, held-out strips."""

from __future__ import annotations

import numpy as np
import pytest

from pupick_ext.training.data import holdout_strips
from pupick_ext.training.sampling import (
    IGNORE,
    POSITIVE,
    UNLABELED,
    PatchSampler,
    TrainingImage,
    dihedral,
    label_mask,
)

RF, OUT = 7, 6


def test_the_eight_dihedral_transforms_are_distinct_and_invertible() -> None:
    square = np.arange(16).reshape(4, 4)
    images = [dihedral(square, k) for k in range(8)]
    assert len({im.tobytes() for im in images}) == 8
    for im in images:
        assert im.flags["C_CONTIGUOUS"]
        # every transform is a permutation of the same pixels with the same centre
        assert sorted(im.ravel()) == list(range(16))
    # quarter turns compose: four of them are the identity
    again = square
    for _ in range(4):
        again = dihedral(again, 1)
    np.testing.assert_array_equal(again, square)
    # each mirror is its own inverse
    for k in range(4, 8):
        np.testing.assert_array_equal(dihedral(dihedral(square, k), k), square)


def _marked_image(shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> TrainingImage:
    """An image whose pixel values are the label mask, so a patch shows where its positives must be."""
    mask = label_mask(shape, rows, cols, radius=1)
    return TrainingImage((mask == POSITIVE).astype(np.float32), mask, np.stack([rows, cols], axis=1))


@pytest.mark.parametrize("augment", [False, True])
def test_augmented_patches_keep_every_output_aligned_with_its_input(augment: bool) -> None:
    rows, cols = np.array([10, 20, 31]), np.array([12, 25, 8])
    sampler = PatchSampler([_marked_image((40, 40), rows, cols)], RF, OUT, seed=1, augment=augment)
    half = RF // 2
    seen = set()
    for _ in range(20):
        patches, masks = sampler.sample(8, 0.5)
        for patch, mask in zip(patches[:, 0], masks, strict=True):
            centre = patch[half : half + OUT, half : half + OUT]  # the input pixel each output scores
            np.testing.assert_array_equal(centre == 1.0, mask == POSITIVE)
            seen.add(patch.tobytes())
    assert len(seen) > 20


def test_augmentation_draws_all_eight_symmetries() -> None:
    """A single asymmetric label off the patch centre lands in eight different places."""
    image = _marked_image((30, 30), np.array([14]), np.array([16]))
    sampler = PatchSampler([image], RF, OUT, seed=0, augment=True)
    sampler.sample(1, 0.99)  # warm the random stream
    places = set()
    for _ in range(200):
        _, masks = sampler.sample(2, 0.99)
        places.add(masks[0].tobytes())
    assert len(places) >= 8


def test_holdout_strips_are_seeded_bands_of_the_given_width() -> None:
    shapes = {"a": (100, 200), "b": (80, 50)}
    strips = holdout_strips(shapes, 0.2, seed=3)
    assert strips == holdout_strips(shapes, 0.2, seed=3)
    for name, (c0, c1) in strips.items():
        assert c1 - c0 == round(0.2 * shapes[name][1])
        assert 0 <= c0 < c1 <= shapes[name][1]


def test_label_mask_marks_disks_and_the_ignore_ring() -> None:
    mask = label_mask((9, 9), np.array([4]), np.array([4]), radius=1, ignore_margin=1)
    assert mask[4, 4] == POSITIVE and mask[4, 5] == POSITIVE and mask[5, 5] == IGNORE
    assert mask[0, 0] == UNLABELED
