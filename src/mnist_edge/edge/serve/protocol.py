"""What the server process and its workers say to each other: calls and answers as length-prefixed pickles.

Both ends are this package, over a private pipe. Kept apart so a worker imports no asyncio.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

FRAME = struct.Struct("!I")  # the length of the pickle that follows


@dataclass(frozen=True)
class Upload:
    """One uploaded image and what its request asked for."""

    name: str
    data: bytes
    raw: bool = False
    top: int = 3
    preview: bool = False
    refuse: bool = True  # False: a digit even for what the model says is not one (?always_digit=1, --always-digit)
    pixels: np.ndarray | None = None  # [28,28] float32, when the server process has prepared it (data is then dropped)
    heavy: bool = False  # the server process found it too costly to prepare itself: a worker's to do


class Outcome(NamedTuple):
    status: int  # 200, 422 (the image's fault) or 500 (ours)
    body: dict[str, Any]  # what `predict --json` prints for the image, or {"file", "error"}


def frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME.pack(len(payload)) + payload
