"""Content hashes of JSON-able objects: the names of data versions, requests and cached models.

Kept apart from `utils` (which imports torch) so the ledger can name requests without loading torch.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
