"""What the image store (zoned.images.store) and recipes (zoned.images.recipes) share, so
that neither imports the other for it: the image errors and what an image name may be.

The errors are ZonedErrors, so that any command that meets one (a checkpoint of a zone whose
image was removed, say) reports its one line and exits 125 rather than "internal error"."""
from __future__ import annotations

from zoned.errors import NotFound, ZonedError
from zoned.linux.names import LOWER_ALNUM, made_of

NAME_MAX = 128
_NAME_CHARS = LOWER_ALNUM | frozenset("_.-")


def valid_name(name: object) -> bool:
    """An image name: the store's directory name and a recipe's `name:`:
    [a-z0-9][a-z0-9_.-]*, at most NAME_MAX characters."""
    return made_of(name, LOWER_ALNUM, _NAME_CHARS, NAME_MAX)


class ImageError(ZonedError):
    """Any image/recipe problem; the message is one line meant for the user."""


class ImageNotFound(ImageError, NotFound):
    """The named image is not in the store."""
