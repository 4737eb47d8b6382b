"""tools/torch_import.py: where `import torch` spends a start's time and memory."""

import re
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "torch_import.py"


def test_each_native_library_and_the_python_import_are_timed_and_the_slowest_modules_listed():
    """libtorch_cpu's static initialisers hold memory of their own, the Python import more on top;
    the module list is -X importtime's, parsed, with torch itself the longest (it contains the rest)."""
    printed = subprocess.run([sys.executable, str(TOOL), "--top", "3"], capture_output=True, text=True,
                             check=True).stdout
    rss = {name: float(mb) for name, mb in re.findall(r"^(\S+(?: \S+)*?)\s+[\d.]+ s\s+RSS\s+(\d+) MB", printed, re.M)}
    assert rss["libtorch_cpu.so"] > rss["libc10.so"], printed
    assert rss["import torch (Python)"] > rss["libtorch_python.so"], printed
    modules = printed.split("cumulative seconds):\n")[1].split("\n")
    assert len([line for line in modules if line.strip()]) == 3
    assert modules[0].split()[1] == "torch", printed
