"""Data: datasets, transforms and the bundled sample images (``replknet.data.photos``)."""
