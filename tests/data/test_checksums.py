"""The shared data files match the SHA-256 sums listed in the shared README."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "README.md"
LINE = re.compile(r"^([0-9a-f]{64})\s+(\S+)$")


def listed_checksums() -> list[tuple[str, str]]:
    if not README.is_file():
        return []
    return [m.groups() for line in README.read_text().splitlines() if (m := LINE.match(line.strip()))]


def test_readme_lists_every_shared_file(shared_data: Path) -> None:
    names = {name for _, name in listed_checksums()}
    assert {"mnist/train-images-idx3-ubyte.gz", "fashion-mnist/t10k-labels-idx1-ubyte.gz",
            "cifar10-jpeg.tar.gz"} <= names
    assert len(names) == 9


@pytest.mark.parametrize(("digest", "name"), listed_checksums() or [
    pytest.param("", "", marks=pytest.mark.skip(reason=f"{README} is absent: no checksums to verify"))])
def test_shared_file_checksum(shared_data: Path, digest: str, name: str) -> None:
    sha = hashlib.sha256()
    with (shared_data / name).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    assert sha.hexdigest() == digest, f"{shared_data / name} does not match the README's SHA-256"
