"""What the image store (zoned.images.store) and recipes (zoned.images.recipes) share, so
that neither imports the other for it: the image errors and what an image name may be.

The errors are ZonedErrors, so that any command that meets one (a checkpoint of a zone whose
image was removed, say) reports its one line and exits 125 rather than "internal error"."""
from __future__ import annotations

import re

from zoned.errors import NotFound, ZonedError

# An image name: the store's directory name and a recipe's `name:`.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


class ImageError(ZonedError):
    """Any image/recipe problem; the message is one line meant for the user."""


class ImageNotFound(ImageError, NotFound):
    """The named image is not in the store."""
