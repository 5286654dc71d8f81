"""Registry of the public XMC benchmarks: sources, files, published statistics, propensity constants.

Every dataset is one typed, frozen :class:`DatasetInfo`. The propensity constants ``(A, B)`` of
Jain et al. (2016) — used by PSP@k / PSnDCG@k (DESIGN §8) — are **written per entry**, never
inferred from a substring of the name at run time (``"Amazon" in name`` would wrongly give
AmazonCat-13K the Amazon-670K constants).

Statistics are those published in the table of the Extreme Classification Repository
(Bhatia et al., http://manikvarma.org/downloads/XC/XMLRepository.html): number of features D,
labels L, train/test points, average labels per point and average points per label. The
prepare step (:mod:`xmr.data.prepare`) measures the same numbers on the files it converts and
records them next to the published ones.

Sources are the repository's Google Drive links. Drive often refuses scripted downloads
(quota pages, retired legacy ``0B...`` ids), so each entry also lists the napkinXC maintainers'
public re-upload of the same archive as a mirror, and the error raised when everything fails
says which file to download by hand and where to put it (``ROOT/NAME/raw/``).

Nothing here touches the network or the disk: the registry is plain data, and it imports no
other xmr module. Preparing a dataset (download, extract, convert) and reading it back are
:func:`xmr.data.prepare.prepare` and :func:`xmr.data.prepare.load_prepared`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

KIND_BOW = "bow"            # XC repository BoW text: header "N D L", then "l1,l2 f:v f:v"
KIND_LF = "lf"              # label-feature: trn/tst/lbl.json.gz + filter_labels_{train,test}.txt
KIND_EMBEDDED = "embedded"  # ships inside the package (xmr.data.debian)
KINDS = (KIND_BOW, KIND_LF, KIND_EMBEDDED)

XC_REPOSITORY = "http://manikvarma.org/downloads/XC/XMLRepository.html"


@dataclass(frozen=True)
class Source:
    """One downloadable file.

    ``url`` is the primary location, ``mirrors`` are tried in order when it fails.
    ``filename`` is the name the file is saved under in ``ROOT/NAME/raw/`` (and the name a user
    gives it when downloading by hand). ``sha256`` is ``None`` when no digest was published;
    the prepare step then records the digest it saw in ``meta.json``.
    """

    url: str
    filename: str
    sha256: Optional[str] = None
    mirrors: Tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class DatasetStats:
    """Published statistics. ``None`` means "not published" (only for the embedded dataset)."""

    n_train: int
    n_test: int
    num_features: Optional[int]
    num_labels: int
    labels_per_point: float
    points_per_label: Optional[float]


@dataclass(frozen=True)
class DatasetInfo:
    """A public benchmark.

    Attributes
    ----------
    name : canonical name (``EURLex-4K``); :func:`get_dataset` matches it case-insensitively.
    kind : ``"bow"``, ``"lf"`` or ``"embedded"``.
    prop_a, prop_b : Jain et al. (2016) propensity constants A, B for this dataset.
    stats : published statistics.
    sources : files to download (empty for embedded datasets).
    files : role → path inside the extracted archive. BoW: ``train``, ``test``. LF: ``trn``,
        ``tst``, ``lbl`` (json.gz), ``filter_train``, ``filter_test`` (txt). Paths are matched
        by their tail, so an archive unpacked one folder deeper still works.
    homepage : where the dataset is described.
    notes : caveats (download quirks, constants chosen, approximations).
    """

    name: str
    kind: str
    prop_a: float
    prop_b: float
    stats: DatasetStats
    sources: Tuple[Source, ...]
    files: Dict[str, str] = field(default_factory=dict)
    homepage: str = XC_REPOSITORY
    notes: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = [asdict(s) for s in self.sources]
        return d


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/uc?export=download&id={file_id}"


_DRIVE_NOTE = (
    "Hosted on Google Drive, which may refuse scripted downloads (virus-scan/quota page, "
    "retired legacy id); xmr tries the direct-download endpoint, then the mirror, and otherwise "
    "asks for a manual download into ROOT/NAME/raw/.")
_MIRROR_NOTE = "mirror: the napkinXC maintainers' public re-upload of the same archive"

AMAZON_A, AMAZON_B = 0.6, 2.6       # Amazon product datasets (XC repository convention)
WIKIPEDIA_A, WIKIPEDIA_B = 0.5, 0.4  # Wikipedia-LSHTC-derived datasets
DEFAULT_A, DEFAULT_B = 0.55, 1.5     # everything else

_REGISTRY: Tuple[DatasetInfo, ...] = (
    DatasetInfo(
        name="EURLex-4K", kind=KIND_BOW, prop_a=DEFAULT_A, prop_b=DEFAULT_B,
        stats=DatasetStats(15539, 3809, 5000, 3993, 5.31, 25.73),
        sources=(Source(_drive("0B3lPMIHmG6vGU0VTR1pCejFpWjg"), "Eurlex.zip",
                        mirrors=(_drive("1xWW1UykQBTD2IorVn7V8XubJatQDScol"),),
                        note=_MIRROR_NOTE),),
        files={"train": "Eurlex/eurlex_train.txt", "test": "Eurlex/eurlex_test.txt"},
        notes=_DRIVE_NOTE + " Legal documents (EUR-Lex), EUROVOC descriptors as labels.",
    ),
    DatasetInfo(
        name="Wiki10-31K", kind=KIND_BOW, prop_a=DEFAULT_A, prop_b=DEFAULT_B,
        stats=DatasetStats(14146, 6616, 101938, 30938, 18.64, 8.52),
        sources=(Source(_drive("0B3lPMIHmG6vGaDdOeGliWF9EOTA"), "Wiki10.zip",
                        mirrors=(_drive("1uV-p682ggXQQTiKZyK5M6B0xJJk8_lJx"),),
                        note=_MIRROR_NOTE),),
        files={"train": "Wiki10/wiki10_train.txt", "test": "Wiki10/wiki10_test.txt"},
        notes=_DRIVE_NOTE + " Social tags of Wikipedia pages (Wiki10+); not a Wikipedia-LSHTC "
              "category set, so the default constants A=0.55, B=1.5 apply.",
    ),
    DatasetInfo(
        name="AmazonCat-13K", kind=KIND_BOW, prop_a=DEFAULT_A, prop_b=DEFAULT_B,
        stats=DatasetStats(1186239, 306782, 203882, 13330, 5.04, 448.57),
        sources=(Source(_drive("0B3lPMIHmG6vGa2tMbVJGdDNSMGc"), "AmazonCat.zip",
                        mirrors=(_drive("1WvBWF9hH5ZlFcpCRhp8wLVGwdeGZXKD2"),),
                        note=_MIRROR_NOTE),),
        files={"train": "AmazonCat/amazonCat_train.txt", "test": "AmazonCat/amazonCat_test.txt"},
        notes=_DRIVE_NOTE + " Product categories; the repository's Amazon constants (0.6, 2.6) "
              "were fitted on Amazon-670K, so this entry keeps the defaults A=0.55, B=1.5.",
    ),
    DatasetInfo(
        name="Amazon-670K", kind=KIND_BOW, prop_a=AMAZON_A, prop_b=AMAZON_B,
        stats=DatasetStats(490449, 153025, 135909, 670091, 5.45, 3.99),
        sources=(Source(_drive("0B3lPMIHmG6vGdUJwRzltS1dvUVk"), "Amazon.zip",
                        mirrors=(_drive("1PV-wbKVv6Ng1K1XM1USqNxFhaQo2qfk6"),),
                        note=_MIRROR_NOTE),),
        files={"train": "Amazon/amazon_train.txt", "test": "Amazon/amazon_test.txt"},
        notes=_DRIVE_NOTE + " Item-to-item recommendation (McAuley & Leskovec 2013).",
    ),
    DatasetInfo(
        name="Wiki-500K", kind=KIND_BOW, prop_a=WIKIPEDIA_A, prop_b=WIKIPEDIA_B,
        stats=DatasetStats(1813391, 783743, 2381304, 501070, 4.77, 24.75),
        sources=(Source(_drive("0B3lPMIHmG6vGRmEzVDVkNjBMR3c"), "WikipediaLarge-500K.zip",
                        mirrors=(_drive("1LkGdINF5coOfkm6J2xys3V1NMW7zz8U1"),),
                        note=_MIRROR_NOTE),),
        files={"train": "WikipediaLarge-500K/WikipediaLarge-500K_train.txt",
               "test": "WikipediaLarge-500K/WikipediaLarge-500K_test.txt"},
        notes=_DRIVE_NOTE + " Listed by the repository as WikipediaLarge-500K / Wikipedia-500K: "
              "Wikipedia categories, hence the Wikipedia constants A=0.5, B=0.4.",
    ),
    DatasetInfo(
        name="Amazon-3M", kind=KIND_BOW, prop_a=AMAZON_A, prop_b=AMAZON_B,
        stats=DatasetStats(1717899, 742507, 337067, 2812281, 36.17, 31.64),
        sources=(Source(_drive("0B3lPMIHmG6vGUEd4eTRxaWl3YkE"), "Amazon-3M.zip",
                        mirrors=(_drive("1ork7yeAcliD9JQiRdEx4QknhMFHjVrku"),),
                        note=_MIRROR_NOTE),),
        files={"train": "Amazon-3M/amazon-3M_train.txt", "test": "Amazon-3M/amazon-3M_test.txt"},
        notes=_DRIVE_NOTE + " The training file is several GB.",
    ),
    DatasetInfo(
        name="LF-AmazonTitles-131K", kind=KIND_LF, prop_a=AMAZON_A, prop_b=AMAZON_B,
        stats=DatasetStats(294805, 134835, 40000, 131073, 2.29, 5.15),
        sources=(Source(_drive("1VlfcdJKJA99223fLEawRmrXhXpwjwJKn"),
                        "LF-AmazonTitles-131K.zip"),),
        files={"trn": "LF-AmazonTitles-131K/trn.json.gz",
               "tst": "LF-AmazonTitles-131K/tst.json.gz",
               "lbl": "LF-AmazonTitles-131K/lbl.json.gz",
               "filter_train": "LF-AmazonTitles-131K/filter_labels_train.txt",
               "filter_test": "LF-AmazonTitles-131K/filter_labels_test.txt"},
        notes=_DRIVE_NOTE + " Published D is the repository's BoW vocabulary; xmr builds its own "
              "TF-IDF of the titles (fit on train), so the prepared D differs. "
              "Reciprocal pairs in filter_labels_test.txt are removed before scoring.",
    ),
    DatasetInfo(
        name="LF-AmazonTitles-1.3M", kind=KIND_LF, prop_a=AMAZON_A, prop_b=AMAZON_B,
        stats=DatasetStats(2248619, 970237, 128000, 1305265, 22.20, 38.24),
        sources=(Source(_drive("1Davc6BIfoTIAS3mP1mUY5EGcGr2zN2pO"),
                        "LF-AmazonTitles-1.3M.zip"),),
        files={"trn": "LF-AmazonTitles-1.3M/trn.json.gz",
               "tst": "LF-AmazonTitles-1.3M/tst.json.gz",
               "lbl": "LF-AmazonTitles-1.3M/lbl.json.gz",
               "filter_train": "LF-AmazonTitles-1.3M/filter_labels_train.txt",
               "filter_test": "LF-AmazonTitles-1.3M/filter_labels_test.txt"},
        notes=_DRIVE_NOTE + " Published D is the repository's BoW vocabulary; xmr builds its own "
              "TF-IDF of the titles (fit on train), so the prepared D differs.",
    ),
    DatasetInfo(
        name="debian-deps", kind=KIND_EMBEDDED, prop_a=DEFAULT_A, prop_b=DEFAULT_B,
        # Approximate: ~55.9k packages, ~35k labels, ~5 labels/point, seeded 80/20 split
        # (measured on the committed snapshot, seed-0 split; D from the default TfidfVectorizer with min_df=2).
        stats=DatasetStats(44678, 11170, 35753, 35437, 5.06, 7.97),
        sources=(Source("https://deb.debian.org/debian/dists/bookworm/main/binary-amd64/"
                        "Packages.xz", "Packages.xz",
                        note="snapshot of the raw fields ships inside the package "
                             "(xmr/data/snapshots) with its sha256; no download needed"),),
        homepage="https://www.debian.org/distrib/packages",
        notes="Embedded: loaded by xmr.data.debian.load_debian_deps (offline). Points are "
              "Debian bookworm binary packages, labels their Depends/Pre-Depends. Statistics "
              "are approximate.",
    ),
)

_BY_KEY = {d.name.lower(): d for d in _REGISTRY}


def list_datasets() -> Tuple[DatasetInfo, ...]:
    """All registered datasets, in registry order."""
    return _REGISTRY


def dataset_names() -> Tuple[str, ...]:
    """Canonical names of all registered datasets."""
    return tuple(d.name for d in _REGISTRY)


def get_dataset(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` called ``name`` (case-insensitive).

    Raises ``ValueError`` listing the valid names when there is none.
    """
    if not isinstance(name, str):
        raise TypeError(f"expected a dataset name (str), got {type(name).__name__}")
    info = _BY_KEY.get(name.strip().lower())
    if info is None:
        raise ValueError(f"unknown dataset {name!r}; expected one of: "
                         f"{', '.join(dataset_names())}")
    return info
