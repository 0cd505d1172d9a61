"""Data: datasets, transforms and the bundled sample images (``replknet.data.photos``)."""

from replknet.data.images import ImageReadError, read_image, read_label, to_rgb
from replknet.data.synthetic import (
    SHAPE_NAMES,
    ShapePose,
    SyntheticShapes,
    random_pose,
    render_class_texture,
    render_shape_mask,
    render_texture,
    write_image_folder,
)

__all__ = [
    "SHAPE_NAMES",
    "ImageReadError",
    "ShapePose",
    "SyntheticShapes",
    "random_pose",
    "read_image",
    "read_label",
    "render_class_texture",
    "render_shape_mask",
    "render_texture",
    "to_rgb",
    "write_image_folder",
]
