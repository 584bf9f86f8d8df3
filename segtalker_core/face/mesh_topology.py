"""Index sets of the MediaPipe face mesh (478 points with refined irises) that the pack uses.

Facts about the mesh, not code: the indices are MediaPipe's (``face_mesh_connections.py`` of
mediapipe 0.10.14 lists the same contours as edge sets); here they are *ordered paths* so that a
polygon can be filled or a curve drawn directly. Importing this module loads nothing heavy.

Sides. MediaPipe names sides from the **person's** point of view: ``LEFT_EYE`` is the person's
left eye, which appears on the **image right** in an ordinary (non-mirrored) photo — checked on
``skimage.data.astronaut()``: point 263 (``LEFT_EYE`` outer corner) has a larger x than point 33
(``RIGHT_EYE`` outer corner). Because the mesh is fitted to face geometry, a mirrored selfie gives
the same result: the eye on the image right is always ``LEFT_*``. Constants here keep MediaPipe's
person-side names; :data:`IMAGE_SIDE` says where each appears. The 19-class parsing labels
``l_*``/``r_*`` follow the same person-side convention (see ``parsing.landmark_parser``).

Paths run along the contour; "upper"/"lower" paths of a feature share their two end points
(eye corners, mouth corners), listed from the image-left corner to the image-right corner.
"""
from __future__ import annotations

import numpy as np

NUM_POINTS = 478  # 468 mesh points + 2 x 5 iris points (refine_landmarks=True)

# --- lips -----------------------------------------------------------------------------------
# Mouth corners: 61 (person's right, image left) and 291 (person's left, image right) on the
# outer contour; 78 and 308 on the inner contour.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291)  # outer corners (image left, image right)
INNER_MOUTH_CORNERS = (78, 308)
UPPER_LIP_TOP = 0  # outer contour, centre
UPPER_LIP_BOTTOM = 13  # inner contour, centre
LOWER_LIP_TOP = 14  # inner contour, centre
LOWER_LIP_BOTTOM = 17  # outer contour, centre

# --- eyes (lid contours) ----------------------------------------------------------------------
# Person's right eye (image left): outer corner 33, inner corner 133.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
# Person's left eye (image right): inner corner 362, outer corner 263.
LEFT_EYE_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
LEFT_EYE_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
RIGHT_EYE_CORNERS = (33, 133)  # (outer, inner)
LEFT_EYE_CORNERS = (263, 362)  # (outer, inner)

# --- irises (refined landmarks only) ------------------------------------------------------------
RIGHT_IRIS_CENTER = 468
RIGHT_IRIS = (469, 470, 471, 472)
LEFT_IRIS_CENTER = 473
LEFT_IRIS = (474, 475, 476, 477)

# --- eyebrows ---------------------------------------------------------------------------------
# Upper and lower edge of each brow, from the temple end to the nose end.
RIGHT_BROW_UPPER = (70, 63, 105, 66, 107)
RIGHT_BROW_LOWER = (46, 53, 52, 65, 55)
LEFT_BROW_UPPER = (300, 293, 334, 296, 336)
LEFT_BROW_LOWER = (276, 283, 282, 295, 285)

# --- nose -------------------------------------------------------------------------------------
NOSE_BRIDGE = (168, 6, 197, 195, 5, 4)  # between the eyes down to just above the tip
NOSE_TIP = 1
NOSE_BOTTOM = 2  # base of the columella, just above the upper lip
# Alae and sides of the nose, image-left to image-right along the nostril base.
NOSE_BASE = (129, 64, 98, 97, 2, 326, 327, 294, 358)
# Outline of the whole nose (bridge, sides, alae, base) as a closed polygon, clockwise on screen:
# down the image-right side, along the base, up the image-left side.
NOSE_OUTLINE = (
    168, 417, 351, 419, 248, 281, 363, 360, 279, 358, 327, 326, 2, 97, 98, 129, 49, 131, 134,
    51, 3, 196, 122, 193,
)

# --- face oval / jaw --------------------------------------------------------------------------
# Closed contour, starting at the top of the forehead (10) and going clockwise on screen:
# image-right side down to the chin (152), then the image-left side back up.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
FOREHEAD_TOP = 10
CHIN = 152
# Lower half of the oval: image-left cheek (234) round the chin to the image-right cheek (454).
JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
       361, 323, 454)
CHIN_CONTOUR = (176, 148, 152, 377, 400)
CHEEK_EXTREMES = (234, 454)  # widest oval points (image left, image right)

# Which side of an ordinary photo each person-side feature appears on.
IMAGE_SIDE: dict[str, str] = {
    "RIGHT_EYE": "image left", "RIGHT_BROW": "image left", "RIGHT_IRIS": "image left",
    "LEFT_EYE": "image right", "LEFT_BROW": "image right", "LEFT_IRIS": "image right",
}


def closed_polygon(upper: tuple[int, ...], lower: tuple[int, ...]) -> tuple[int, ...]:
    """Polygon of a feature bounded by two paths sharing end points (eye lids, lip contours)."""
    if upper[0] != lower[0] or upper[-1] != lower[-1]:
        # Brows: the two edges do not share end points, the polygon still closes end to end.
        return tuple(upper) + tuple(reversed(lower))
    return tuple(upper) + tuple(reversed(lower[1:-1]))


RIGHT_EYE = closed_polygon(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
LEFT_EYE = closed_polygon(LEFT_EYE_UPPER, LEFT_EYE_LOWER)
RIGHT_BROW = closed_polygon(RIGHT_BROW_UPPER, RIGHT_BROW_LOWER)
LEFT_BROW = closed_polygon(LEFT_BROW_UPPER, LEFT_BROW_LOWER)
# Upper lip: outer upper contour, back along the inner upper contour (the corners 61/291 and
# 78/308 differ, so nothing is shared). Lower lip likewise. Mouth interior: the inner opening.
UPPER_LIP = tuple(LIPS_OUTER_UPPER) + tuple(reversed(LIPS_INNER_UPPER))
LOWER_LIP = tuple(LIPS_OUTER_LOWER) + tuple(reversed(LIPS_INNER_LOWER))
MOUTH_OPENING = closed_polygon(LIPS_INNER_UPPER, LIPS_INNER_LOWER)
LIPS_OUTER = closed_polygon(LIPS_OUTER_UPPER, LIPS_OUTER_LOWER)

# Every point the mouth region owns (the viseme rig moves these).
MOUTH_POINTS: tuple[int, ...] = tuple(sorted(set(
    LIPS_OUTER_UPPER + LIPS_OUTER_LOWER + LIPS_INNER_UPPER + LIPS_INNER_LOWER
)))


def points(landmarks: np.ndarray, indices: tuple[int, ...]) -> np.ndarray:
    """``landmarks [..., 478, D]`` -> ``[..., len(indices), D]`` in the given order."""
    assert landmarks.shape[-2] == NUM_POINTS, landmarks.shape
    return landmarks[..., list(indices), :]
