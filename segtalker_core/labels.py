"""Label schemes for face parsing and the networks.

Three schemes are in play:

* ``BISENET_19`` -- the order of face-parsing.PyTorch (zllrunning) and facexlib's BiSeNet. Every
  parser in this pack outputs this order (`SEGTALKER_FACES` label maps).
* ``CELEBAMASK_19`` -- the order of the official CelebAMask-HQ annotation files (``g_mask.py``).
  Only needed to read that data set; remaps below go both ways.
* ``REGIONS_12`` -- the 12-region merge the networks use (E4S; the SegTalker paper merges 19 into
  12). `SEGTALKER_SEGMENTATION`, style codes and the region names shown in the nodes use it.

Left/right: ``l_*`` / ``r_*`` follow the BiSeNet checkpoint, see :data:`LEFT_RIGHT_CONVENTION`.
"""
from __future__ import annotations

import numpy as np

BISENET_19: tuple[str, ...] = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
    "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)

# CelebAMask-HQ/face_parsing/Data_preprocessing/g_mask.py lists these 18 parts; its masks use the
# position + 1, with 0 for background.
CELEBAMASK_19: tuple[str, ...] = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)

REGIONS_12: tuple[str, ...] = (
    "background", "lips", "brows", "eyes", "hair", "nose", "skin", "ears", "neck",
    "mouth_interior", "eyeglasses", "earrings",
)

# Which BiSeNet classes each of the 12 regions gathers (E4S merge).
REGION_MEMBERS: dict[str, tuple[str, ...]] = {
    "background": ("background", "neck_l", "cloth", "hat"),
    "lips": ("u_lip", "l_lip"),
    "brows": ("l_brow", "r_brow"),
    "eyes": ("l_eye", "r_eye"),
    "hair": ("hair",),
    "nose": ("nose",),
    "skin": ("skin",),
    "ears": ("l_ear", "r_ear"),
    "neck": ("neck",),
    "mouth_interior": ("mouth",),
    "eyeglasses": ("eye_g",),
    "earrings": ("ear_r",),
}

LEFT_RIGHT_CONVENTION = (
    "l_* / r_* are named as in the BiSeNet 79999_iter checkpoint; see parsing.landmark_parser for "
    "which image side that is."
)

NUM_CLASSES_19 = 19
NUM_REGIONS = 12
# What may take the place of a region's old pixels when a shape edit moves it (node option).
SHAPE_EDIT_FILLS = ("skin", "background", "hair", "lips")


def _index_map(source: tuple[str, ...], target: tuple[str, ...]) -> np.ndarray:
    return np.array([target.index(name) for name in source], dtype=np.uint8)


def _merge_map() -> np.ndarray:
    lut = np.zeros(NUM_CLASSES_19, dtype=np.uint8)
    for region_index, region in enumerate(REGIONS_12):
        for member in REGION_MEMBERS[region]:
            lut[BISENET_19.index(member)] = region_index
    return lut


# Look-up tables: ``lut[label_map]`` converts a whole map at once.
CELEBAMASK_TO_BISENET: np.ndarray = _index_map(CELEBAMASK_19, BISENET_19)
BISENET_TO_CELEBAMASK: np.ndarray = _index_map(BISENET_19, CELEBAMASK_19)
BISENET_TO_REGIONS: np.ndarray = _merge_map()
CELEBAMASK_TO_REGIONS: np.ndarray = BISENET_TO_REGIONS[CELEBAMASK_TO_BISENET]
# 12 -> 19 cannot be exact (lips = upper + lower); each region becomes its first member class.
REGIONS_TO_BISENET: np.ndarray = np.array(
    [BISENET_19.index(REGION_MEMBERS[r][0]) for r in REGIONS_12], dtype=np.uint8
)
REGIONS_TO_CELEBAMASK: np.ndarray = BISENET_TO_CELEBAMASK[REGIONS_TO_BISENET]

# One palette for every preview, indexed by region (12). 19-class maps are shown through the merge,
# so a class and its region always have the same colour.
REGION_PALETTE: np.ndarray = np.array(
    [
        [0, 0, 0],        # background
        [230, 40, 70],    # lips
        [120, 60, 20],    # brows
        [40, 120, 255],   # eyes
        [250, 200, 40],   # hair
        [60, 200, 90],    # nose
        [255, 170, 130],  # skin
        [160, 80, 220],   # ears
        [100, 220, 220],  # neck
        [90, 0, 40],      # mouth_interior
        [200, 200, 200],  # eyeglasses
        [255, 0, 255],    # earrings
    ],
    dtype=np.uint8,
)


def merge_to_regions(labels19: np.ndarray) -> np.ndarray:
    """BiSeNet 19-class map (any shape, integer) -> 12-region map of the same shape (uint8)."""
    _check_range(labels19, NUM_CLASSES_19, "labels19")
    return BISENET_TO_REGIONS[labels19]


def region_index(name: str) -> int:
    """Index of a region name; the error lists the valid names."""
    try:
        return REGIONS_12.index(name)
    except ValueError:
        raise ValueError(
            f"unknown region {name!r}; valid regions are: {', '.join(REGIONS_12)}"
        ) from None


def parse_region_list(text: str | list[str] | tuple[str, ...]) -> list[int]:
    """``"lips, hair"`` or ``["lips", "hair"]`` -> sorted region indices (duplicates removed)."""
    names = text.replace(";", ",").split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n.strip()]
    return sorted({region_index(n) for n in names})


def colorize_regions(regions12: np.ndarray) -> np.ndarray:
    """12-region map ``[..., H, W]`` -> RGB uint8 ``[..., H, W, 3]``."""
    _check_range(regions12, NUM_REGIONS, "regions12")
    return REGION_PALETTE[regions12]


def colorize_bisenet(labels19: np.ndarray) -> np.ndarray:
    """19-class map ``[..., H, W]`` -> RGB uint8 ``[..., H, W, 3]`` (region colours)."""
    return colorize_regions(merge_to_regions(labels19))


def _check_range(labels: np.ndarray, count: int, name: str) -> None:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label map, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= count):
        raise ValueError(
            f"{name} has labels outside 0..{count - 1} (min {labels.min()}, max {labels.max()}); "
            f"is it a map of another label scheme?"
        )
