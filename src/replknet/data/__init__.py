"""Data: datasets, transforms and the bundled sample images (``replknet.data.photos``)."""

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
    "ShapePose",
    "SyntheticShapes",
    "random_pose",
    "render_class_texture",
    "render_shape_mask",
    "render_texture",
    "write_image_folder",
]
