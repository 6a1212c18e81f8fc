"""Loading a report in a real headless Chromium (Debian's ``chromium``): its screenshot and its DOM.

The screenshot's PNG is decoded here with zlib and struct (no imaging library): enough to count the
pixels that are not white and those of a given colour.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

WINDOW = (1200, 900)


def chromium() -> str:
    """The Chromium binary; a clear failure when it is missing (scripts/bootstrap.sh installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise AssertionError(
            "chromium is not installed: run scripts/bootstrap.sh as root (apt-get install chromium)"
        )
    return found


def _run(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *flags,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, timeout=120, check=True)


def screenshot(page: Path, work: Path) -> bytes:
    """The PNG of the page as Chromium draws it in a 1200 x 900 window."""
    target = work / f"{page.stem}.png"
    _run(page, work / "chromium-profile", f"--screenshot={target}")
    return target.read_bytes()


def dump_dom(page: Path, work: Path) -> str:
    """The page's DOM after Chromium has loaded it."""
    return _run(page, work / "chromium-profile", "--dump-dom").stdout.decode("utf-8")


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and the pixels (RGB or RGBA tuples) of an 8-bit, non-interlaced RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, chunks, header = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {depth=} {colour=}"
    channels = 4 if colour == 6 else 3
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], line, previous, channels)
        rows.append(line)
        previous = line
    pixels = [tuple(row[x : x + channels]) for row in rows for x in range(0, stride, channels)]
    return width, height, pixels


def _unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = previous[i]
        corner = previous[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + predictor) & 0xFF


def share_not_white(pixels: list[tuple[int, ...]]) -> float:
    """The share of pixels that are not (nearly) white."""
    return sum(1 for p in pixels if min(p[:3]) < 240) / max(len(pixels), 1)


def count_colour(pixels: list[tuple[int, ...]], rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    """How many pixels are within ``tolerance`` of a colour (e.g. the timeline's green of a completed job)."""
    return sum(1 for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p[:3], rgb, strict=True)))


class Elements(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def job_bars(self) -> dict[str, dict[str, str | None]]:
        """The timeline's job bars by id."""
        return {
            str(a.get("id")): a
            for tag, a in self.tags
            if tag == "div" and "job-bar" in (a.get("class") or "").split()
        }
