"""What a process's resident memory is made of, from /proc/PID/smaps: the mappings grouped by
what backs them (a shared library, the heap, anonymous memory, a file), largest first.

    python tools/rss_map.py PID [--top 12]

Issue 15 asks for the server's RSS at rest to be at most 1 GB; this says which part to go after
(CUDA's libraries, torch's, the heap, pinned buffers). Linux only; prints, never asserts.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# A mapping's header line: address range, permissions, offset, device, inode, then its path (if any).
_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def resident_by_backing(smaps: str) -> Counter[str]:
    """kB resident per backing: the file's name (libraries and files), or the kernel's label
    ([heap], [stack]), or [anonymous] for memory no file backs (malloc's large blocks, torch's
    and CUDA's allocations)."""
    sizes: Counter[str] = Counter()
    backing = "[anonymous]"
    for line in smaps.splitlines():
        header = _HEADER.match(line)
        if header:
            path = header.group(1).strip()
            backing = Path(path).name if path.startswith("/") else (path or "[anonymous]")
        elif line.startswith("Rss:"):
            sizes[backing] += int(line.split()[1])
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pid", type=int)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    sizes = resident_by_backing(Path(f"/proc/{args.pid}/smaps").read_text())
    total = sum(sizes.values())
    print(f"RSS of process {args.pid}: {total / 1024:.0f} MB, by what backs it")
    largest = sizes.most_common(args.top)
    for backing, kilobytes in largest:
        print(f"  {kilobytes / 1024:8.1f} MB  {backing}")
    rest = total - sum(kilobytes for _, kilobytes in largest)
    print(f"  {rest / 1024:8.1f} MB  the other {max(0, len(sizes) - args.top)} backings")


if __name__ == "__main__":
    main()
