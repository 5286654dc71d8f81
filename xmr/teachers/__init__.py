"""Teachers: top-K label stores exported from xmr models or imported from other libraries."""

from xmr.teachers.store import TeacherStore, from_scores_csr, from_topk

__all__ = ["TeacherStore", "from_topk", "from_scores_csr"]
