"""Small helpers shared by the package (atomic writes, optional imports, hashing)."""
