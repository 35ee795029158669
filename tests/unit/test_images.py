"""Image tokens by OpenAI's published tile and patch formulas."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.images import anthropic_image_tokens, image_size, openai_image_tokens
from tokenbudget_core.messages import ImagePart


def png_data_url(width: int, height: int) -> str:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def gif_data_url(width: int, height: int) -> str:
    return "data:image/gif;base64," + base64.b64encode(b"GIF89a" + struct.pack("<HH", width, height)).decode()


def jpeg_data_url(width: int, height: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + app0 + sof + b"\xff\xd9").decode()


@pytest.mark.parametrize("make", [png_data_url, gif_data_url, jpeg_data_url])
def test_size_is_read_from_data_url_headers(make) -> None:  # type: ignore[no-untyped-def]
    assert image_size(ImagePart(url=make(1024, 640))) == (1024, 640)


# Worked examples from OpenAI's vision guide (gpt-4o: 85 base + 170 per 512px tile).
@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        (1024, 1024, "high", 765),  # -> 768x768, 4 tiles
        (2048, 4096, "high", 1105),  # -> 1024x2048 -> 768x1536, 6 tiles
        (4096, 8192, "low", 85),
    ],
)
def test_gpt4o_tile_formula(width: int, height: int, detail: str, tokens: int) -> None:
    part = ImagePart(url=png_data_url(width, height), detail=detail)  # type: ignore[arg-type]
    assert openai_image_tokens(part, "gpt-4o").tokens == tokens


def test_patch_formula_for_mini_models() -> None:
    # 1024x1024 -> 32x32 = 1024 patches, times gpt-4.1-mini's 1.62 multiplier
    part = ImagePart(url="https://x/img.png", width=1024, height=1024)
    assert openai_image_tokens(part, "gpt-4.1-mini").tokens == 1659
    # 1800x2400 needs 57x75 = 4275 patches, scaled down under the 1536 cap
    big = openai_image_tokens(ImagePart(url="https://x/i.png", width=1800, height=2400), "gpt-4.1-mini")
    assert big.tokens <= 1536 * 1.62 + 1
    assert big.exact


def test_unknown_size_is_an_upper_bound_flagged_inexact() -> None:
    part = ImagePart(url="https://example.com/cat.png", detail="high")
    result = openai_image_tokens(part, "gpt-4o")
    assert not result.exact
    assert result.tokens >= max(
        openai_image_tokens(ImagePart(url=png_data_url(w, h)), "gpt-4o").tokens
        for w, h in [(512, 512), (2048, 768), (768, 2048), (4000, 3000), (10000, 100)]
    )


def test_message_with_image_counts_text_plus_image_and_flags_unknown_sizes() -> None:
    counter = TokenCounter.for_model("gpt-4o")
    text_only = counter.count_messages(
        [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}]
    )
    with_image = counter.count_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": png_data_url(1024, 1024), "detail": "high"}},
                ],
            }
        ]
    )
    assert with_image - text_only == 765
    assert with_image.exact
    unknown = counter.count_messages(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    )
    assert not unknown.exact


def test_anthropic_image_estimate() -> None:
    assert anthropic_image_tokens(ImagePart(url=png_data_url(1000, 1000))).tokens == 1334
    assert anthropic_image_tokens(ImagePart(url=png_data_url(4000, 4000))).tokens <= 1600
