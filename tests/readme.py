"""The README's Python examples, read from README.md as written there."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_block(containing: str) -> str:
    """The one ```python block of the README that contains `containing`."""
    blocks = [block for block in re.findall(
        r"^```python\n(.*?)^```", README.read_text("utf-8"),
        re.DOTALL | re.MULTILINE) if containing in block]
    if len(blocks) != 1:
        raise ValueError(
            f"`containing` must occur in exactly one python block of the "
            f"README (found {len(blocks)}). Received: "
            f"containing={containing!r}")
    return blocks[0]
