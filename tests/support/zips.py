"""Hand-made zip entries that a safe extractor must refuse."""
from __future__ import annotations

import stat
import zipfile


def symlink_entry(name: str, target: str | bytes) -> tuple[zipfile.ZipInfo, bytes]:
    """A Unix symbolic link named ``name`` pointing at ``target``, as (info, data) for ZipFile.writestr."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode() if isinstance(target, str) else target
