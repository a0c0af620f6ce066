"""Read catalogs into the one schema (:mod:`indexer.schema`).

Entry points
* :func:`load_catalog` - any supported path: an own-format file or folder, or a public-format folder
* :func:`load_dataset` - the shared public datasets by name (``beauty``, ``scientific``, ``magazine``,
  ``subscription-boxes``, ``instruments``)
* :func:`load_own`, :func:`read_items`, :func:`read_reviews` - the project's own CSV / JSONL / Parquet
* :func:`write_items`, :func:`write_reviews` - the inverse, so own-format files round-trip
* the public readers, re-exported from :mod:`indexer.amazon` and :mod:`indexer.recbole`
  (the own format is described in :mod:`indexer.ownformat`)

Data is read where it lies, never copied.
"""

from __future__ import annotations

import os
from pathlib import Path

from .amazon import load_amazon2014, load_amazon2018, load_amazon2023
from .ownformat import OWN_EXTENSIONS, load_own, read_items, read_reviews, write_items, write_reviews
from .readers import iter_json_lines
from .recbole import load_beauty, load_unisrec
from .schema import Catalog, CatalogFormatError, UnknownNameError

__all__ = [
    "DATASETS", "load_amazon2014", "load_amazon2018", "load_amazon2023", "load_beauty", "load_catalog",
    "load_dataset", "load_own", "load_unisrec", "read_items", "read_reviews", "shared_data_dir",
    "write_items", "write_reviews",
]

# ----------------------------------------------------------------------------- datasets and dispatch

DATASETS: dict[str, str] = {
    "beauty": "amazon-beauty-2014",
    "scientific": "amazon-scientific-unisrec",
    "magazine": "amazon-magazine-2018",
    "subscription-boxes": "amazon-subscription-boxes-2023",
    "instruments": "amazon-musical-instruments-2014",
}
_FORMAT_OF_DATASET = {"beauty": "beauty", "scientific": "unisrec", "magazine": "amazon2018",
                      "subscription-boxes": "amazon2023", "instruments": "amazon2014"}


def shared_data_dir() -> Path:
    """``$SEMREC_SHARED/data``; ``SEMREC_SHARED`` defaults to ``../shared`` next to the repository."""
    root = os.environ.get("SEMREC_SHARED") or str(Path(__file__).resolve().parents[1] / ".." / "shared")
    return Path(root).resolve() / "data"


def _amazon_files(folder: Path) -> tuple[Path, Path | None]:
    """(reviews file, metadata file or None) in a folder of Amazon JSON-lines files."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and ".json" in p.name.lower())
    meta = [p for p in files if p.name.lower().startswith("meta")]
    reviews = [p for p in files if p not in meta]
    if len(reviews) != 1 or len(meta) > 1:
        raise CatalogFormatError(str(folder), None, None, "expected one reviews JSON file and at most one "
                                 f"meta_* file, found {[p.name for p in files]}")
    return reviews[0], (meta[0] if meta else None)


def _amazon_year(reviews: Path) -> str:
    """Tell the Amazon release from the first review's fields."""
    for _, rec in iter_json_lines(reviews):
        if "parent_asin" in rec or "user_id" in rec:
            return "amazon2023"
        return "amazon2014" if "helpful" in rec else "amazon2018"
    raise CatalogFormatError(str(reviews), None, None, "no reviews in file")


def _detect(folder: Path) -> str:
    names = {p.name for p in folder.iterdir()}
    if "item_description.csv" in names:
        return "beauty"
    if any(n.endswith(".text") for n in names) and any(n.endswith(".test.inter") for n in names):
        return "unisrec"
    if any(Path(n).stem == "items" and Path(n).suffix.lower() in OWN_EXTENSIONS for n in names):
        return "own"
    return _amazon_year(_amazon_files(folder)[0])


def _own_folder(folder: Path) -> Catalog:
    def find(stem: str) -> Path | None:
        found = [folder / f"{stem}{e}" for e in OWN_EXTENSIONS if (folder / f"{stem}{e}").is_file()]
        return found[0] if found else None

    items = find("items")
    if items is None:
        raise CatalogFormatError(str(folder), None, None, "no items.{csv,tsv,jsonl,json,parquet} file")
    return load_own(items, find("reviews"))


_AMAZON = {"amazon2014": load_amazon2014, "amazon2018": load_amazon2018, "amazon2023": load_amazon2023}
_OWN = ("own", "csv", "jsonl", "json", "parquet")


def _load_folder(folder: Path, fmt: str) -> Catalog:
    if fmt == "auto":
        fmt = _detect(folder)
    if fmt in _OWN:
        return _own_folder(folder)
    if fmt == "beauty":
        return load_beauty(folder)
    if fmt == "unisrec":
        return load_unisrec(folder)
    if fmt in _AMAZON:
        return _AMAZON[fmt](*_amazon_files(folder))
    raise ValueError(f"unknown format {fmt!r}")


def load_catalog(path: str | Path, format: str = "auto") -> Catalog:  # noqa: A002 - the public name
    """Load any supported catalog.

    ``format``: ``"auto"`` (by extension for a file, by contents for a folder), ``"own"``/``"csv"``/
    ``"jsonl"``/``"parquet"`` (an items file, or a folder with ``items.*`` and optional ``reviews.*``),
    ``"amazon2014"``/``"amazon2018"``/``"amazon2023"`` (a folder, or a reviews file alone),
    ``"beauty"``/``"unisrec"`` (a folder), or a :data:`DATASETS` name (that dataset's folder).
    """
    path = Path(path)
    fmt = format.lower().replace("_", "-")
    known = {"auto", "beauty", "unisrec", *_OWN, *_AMAZON}
    if fmt not in known:
        if fmt in DATASETS:
            return load_dataset(fmt, path)
        raise UnknownNameError("format", format, sorted(known | set(DATASETS)))
    if not path.exists():
        raise CatalogFormatError(str(path), None, None, "no such file or folder")
    if path.is_dir():
        return _load_folder(path, fmt)
    if fmt in _AMAZON:
        return _AMAZON[fmt](path)
    if fmt not in ("auto", *_OWN):
        raise CatalogFormatError(str(path), None, None, f"format {format!r} needs a folder")
    return load_own(path)


def dataset_key(name: str) -> str:
    """The :data:`DATASETS` key for ``name`` (case and ``_``/``-`` free); UnknownNameError if none."""
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise UnknownNameError("dataset", name, DATASETS)
    return key


def load_dataset(name: str, path: str | Path | None = None) -> Catalog:
    """A shared public dataset by name; ``path`` is its folder (default ``shared_data_dir()/<folder>``)."""
    key = dataset_key(name)
    folder = Path(path) if path is not None else shared_data_dir() / DATASETS[key]
    if not folder.is_dir():
        raise CatalogFormatError(str(folder), None, None, f"dataset folder for {key!r} not found")
    try:
        return _load_folder(folder, _FORMAT_OF_DATASET[key])
    except (CatalogFormatError, FileNotFoundError) as e:  # the folder of another dataset, or of none
        raise CatalogFormatError(str(folder), None, None, f"not the {key!r} dataset (its folder is "
                                 f"{DATASETS[key]}, as {_FORMAT_OF_DATASET[key]} files): {e}") from e
