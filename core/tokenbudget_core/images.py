"""Image input tokens, by OpenAI's published formulas and Anthropic's rule of thumb.

OpenAI prices an image by detail level: ``low`` is a flat base fee; ``high`` and
``auto`` scale the image to fit 2048x2048, then its shortest side to 768 px, and
charge per 512 px tile (``base + tiles * per_tile``). The mini/nano models and
o4-mini instead count 32 px patches (capped at 1536) times a multiplier.

The size comes from the part's ``width``/``height`` or, for ``data:`` URLs, from the
image header (PNG, JPEG, GIF, WebP). When it is unknown the largest possible figure
is returned and marked inexact, so a budget check never under-counts.

The rule is chosen by model family: a fine-tune (``ft:gpt-4o-mini-2024-07-18:org::id``) is
priced like its base model, and a ``provider/`` prefix (``openai/gpt-4o``) is ignored. A model
that matches no known family gets the most expensive known rule for the image (inexact), for
the same reason.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass

from .errors import InvalidInputError
from .messages import ImagePart
from .registry import base_model_name

__all__ = [
    "ImageTokens",
    "GEMINI_MIN_IMAGE_TOKENS",
    "GEMINI_TILE_TOKENS",
    "anthropic_image_tokens",
    "gemini_image_tokens",
    "image_size",
    "max_image_tokens",
    "openai_image_tokens",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageTokens:
    """Tokens of one image."""

    tokens: int
    """The token figure."""
    exact: bool
    """False when the figure is an upper bound: the size, or the model's image rule, was unknown."""


# (base, per tile) for tile-priced models; first prefix match wins (after the patch models).
_TILE_MODELS: tuple[tuple[str, int, int], ...] = (
    ("gpt-4o-mini", 2833, 5667),
    ("gpt-5-chat", 70, 140),
    ("gpt-5", 70, 140),
    ("o1", 75, 150),
    ("o3", 75, 150),
    ("computer-use", 65, 129),
    ("gpt-4o", 85, 170),
    ("chatgpt-4o", 85, 170),
    ("gpt-4.1", 85, 170),
    ("gpt-4.5", 85, 170),
    ("gpt-4-turbo", 85, 170),
    ("gpt-4-vision", 85, 170),
    ("gpt-4-1106-vision", 85, 170),
)
# Patch-priced models and their multipliers.
_PATCH_MODELS: tuple[tuple[str, float], ...] = (
    ("gpt-5-mini", 1.62),
    ("gpt-5-nano", 2.46),
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("o4-mini", 1.72),
)
_MAX_PATCHES = 1536


def image_size(part: ImagePart) -> tuple[int, int] | None:
    """Width and height of an image part, from its fields or its data URL header."""
    if part.width and part.height:
        return part.width, part.height
    if not part.url.startswith("data:"):
        return None
    m = re.match(r"data:[^;,]*;base64,", part.url)
    if not m:
        return None
    # The header sits in the first few hundred bytes (JPEG SOF may be further; read 64 KiB).
    head_b64 = part.url[m.end() : m.end() + 87_384]
    head_b64 = head_b64[: len(head_b64) - len(head_b64) % 4]
    try:
        head = base64.b64decode(head_b64, validate=False)
    except (binascii.Error, ValueError):
        return None
    return _sniff(head)


def _sniff(data: bytes) -> tuple[int, int] | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if chunk == b"VP8L":
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def _tile_tokens(width: int, height: int, base: int, per_tile: int) -> int:
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return base + per_tile * tiles


def _patch_tokens(width: int, height: int, multiplier: float) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches > _MAX_PATCHES:
        shrink = math.sqrt(32 * 32 * _MAX_PATCHES / (width * height))
        shrink *= min(
            math.floor(width * shrink / 32) / (width * shrink / 32),
            math.floor(height * shrink / 32) / (height * shrink / 32),
        )
        patches = min(_MAX_PATCHES, math.ceil(width * shrink / 32) * math.ceil(height * shrink / 32))
    return math.ceil(patches * multiplier)


def _known(name: str, prefix: str) -> bool:
    """``name`` is of the family ``prefix`` names. A ``-mini``/``-nano`` size the prefix does not
    name is another model (``gpt-5.4-mini`` is not ``gpt-5``; its rule is unknown)."""
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    return not any(size in rest and size not in prefix for size in ("mini", "nano"))


def _rule(model: str) -> tuple[float, None] | tuple[int, int] | None:
    """``(multiplier, None)`` for a patch-priced model, ``(base, per_tile)`` for a tile-priced
    one, ``None`` when the model matches no known family."""
    name = base_model_name(model)  # a fine-tune's rule is its base model's
    for prefix, multiplier in _PATCH_MODELS:
        if _known(name, prefix):
            return multiplier, None
    for prefix, base, per_tile in _TILE_MODELS:
        if _known(name, prefix):
            return base, per_tile
    return None


def _by_rule(part: ImagePart, rule: tuple[float, None] | tuple[int, int]) -> ImageTokens:
    first, per_tile = rule
    if per_tile is None:
        size = image_size(part)
        if size is None:
            return ImageTokens(tokens=math.ceil(_MAX_PATCHES * first), exact=False)
        return ImageTokens(tokens=_patch_tokens(*size, first), exact=True)
    base = int(first)
    if part.detail == "low":
        return ImageTokens(tokens=base, exact=True)
    size = image_size(part)
    if size is None:
        # 2048x768 after scaling is the most tiles any image can take (4 x 2 = 8).
        return ImageTokens(tokens=base + per_tile * 8, exact=False)
    return ImageTokens(tokens=_tile_tokens(*size, base, per_tile), exact=True)


_ALL_RULES: tuple[tuple[float, None] | tuple[int, int], ...] = (
    *((m, None) for _, m in _PATCH_MODELS),
    *((b, t) for _, b, t in _TILE_MODELS),
)


def _check_part(part: object) -> None:
    if not isinstance(part, ImagePart):
        raise InvalidInputError(
            "part", f"must be an ImagePart, got {type(part).__name__}", value=part, fix="ImagePart(url=...)"
        )


def openai_image_tokens(part: ImagePart, model: str) -> ImageTokens:
    """Input tokens of one image part for an OpenAI model.

    Args:
        part: The image part (detail level, and size if known).
        model: The canonical model name (``gpt-4o``, ``gpt-4.1-mini``...). A fine-tune
            (``ft:gpt-4o-mini-2024-07-18:org::id``) is priced like its base model. A name of no
            known family gets :func:`max_image_tokens` (an upper bound, ``exact=False``).

    Raises:
        InvalidInputError: ``part`` is not an :class:`ImagePart`, or ``model`` not a model name.
    """
    _check_part(part)
    if not isinstance(model, str):
        raise InvalidInputError("model", f"must be a model name, got {type(model).__name__}", value=model)
    rule = _rule(model)
    if rule is None:
        return max_image_tokens(part)
    return _by_rule(part, rule)


def max_image_tokens(part: ImagePart) -> ImageTokens:
    """The most tokens any known rule (OpenAI's tile and patch rules, Claude's) charges for this
    image: the figure for a model whose image rule is unknown. Always ``exact=False``."""
    _check_part(part)
    figures = [_by_rule(part, rule).tokens for rule in _ALL_RULES]
    figures.append(anthropic_image_tokens(part).tokens)
    return ImageTokens(tokens=max(figures), exact=False)


GEMINI_TILE_TOKENS = 258
"""Gemini's tokens per image tile (an image of at most 384 px a side is one tile of its own)."""
GEMINI_MIN_IMAGE_TOKENS = 1120
"""Gemini 3's tokens for an image at its default (high) media resolution: the least a Gemini
image is reserved at, whichever generation answers."""


def gemini_image_tokens(part: ImagePart) -> ImageTokens:
    """Input tokens of one image for Gemini, an upper bound (``exact=False``): 258 per 768x768
    tile (one tile when both sides are at most 384 px; larger images are cut into tiles, counted
    here as ``ceil(w / 768) * ceil(h / 768)``), and at least :data:`GEMINI_MIN_IMAGE_TOKENS`.
    An image of unknown size gets :func:`max_image_tokens`."""
    _check_part(part)
    size = image_size(part)
    if size is None:
        return max_image_tokens(part)
    w, h = size
    tiles = 1 if w <= 384 and h <= 384 else math.ceil(w / 768) * math.ceil(h / 768)
    return ImageTokens(tokens=max(GEMINI_TILE_TOKENS * tiles, GEMINI_MIN_IMAGE_TOKENS), exact=False)


def anthropic_image_tokens(part: ImagePart) -> ImageTokens:
    """Estimated input tokens of one image for Claude: ``width * height / 750``.

    Claude scales images whose long edge exceeds 1568 px down first, so the figure
    is capped at about 1,600 tokens; unknown sizes get that cap (inexact).
    """
    _check_part(part)
    size = image_size(part)
    if size is None:
        return ImageTokens(tokens=1600, exact=False)
    w, h = size
    long_edge = max(w, h)
    if long_edge > 1568:
        scale = 1568 / long_edge
        w, h = round(w * scale), round(h * scale)
    return ImageTokens(tokens=min(1600, math.ceil(w * h / 750)), exact=False)
