"""What the image store (zoned.images.store) and recipes (zoned.images.recipes) share, so
that neither imports the other for it: the image errors and what an image name may be."""
from __future__ import annotations

import re

# An image name: the store's directory name and a recipe's `name:`.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


class ImageError(Exception):
    """Any image/recipe problem; the message is one line meant for the user."""


class ImageNotFound(ImageError):
    """The named image is not in the store."""
