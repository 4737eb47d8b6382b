"""The one byte formatter (lama/units.py)."""

import pytest

from lama.units import format_bytes


@pytest.mark.parametrize("count, binary, text", [
    (1_340_000_000, False, "1.3 GB"), (840_000_000, False, "840 MB"), (12_500, False, "12.5 KB"),
    (512, False, "512 bytes"), (50 * 2**20, True, "50 MB"), (int(1.5 * 2**10), True, "1.5 KB"),
    (2**30, True, "1 GB"), (0, True, "0 bytes"),
])
def test_counts_read_as_people_write_them(count, binary, text):
    assert format_bytes(count, binary=binary) == text
