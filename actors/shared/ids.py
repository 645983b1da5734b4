"""Decision ids: made from what is decided, so a decision taken twice is one event.

The hub drops an event whose id it has logged, so a decision repeated before the first came
back, or taken again after a restart, is written once.
"""

from __future__ import annotations

import hashlib


def decision_id(*parts: object) -> str:
    text = "\x1f".join(map(str, parts))
    return "dec-" + hashlib.sha256(text.encode()).hexdigest()[:40]
