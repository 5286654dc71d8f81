"""One entry point to load any dataset xmr knows: the embedded one, a prepared registry dataset,
or a folder in the canonical prepared layout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from xmr.data.dataset import XMCDataset


def load_dataset(name: str, root: Optional[str] = None, test_fraction: float = 0.2,
                 seed: int = 0) -> XMCDataset:
    """``debian-deps`` → :func:`xmr.data.debian.load_debian_deps`; a registry name or a folder →
    :func:`xmr.data.registry.load_prepared` (run ``xmr data prepare NAME`` first)."""
    if name.lower() == "debian-deps":
        from xmr.data.debian import load_debian_deps

        return load_debian_deps(test_fraction=test_fraction, seed=seed)
    from xmr.data.registry import load_prepared

    p = Path(name)
    if p.is_dir():
        return load_prepared(p.name, root=str(p.parent))
    return load_prepared(name, root=root)
