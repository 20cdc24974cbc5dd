"""What `aligndata shards-from-labels` reads: the labelled files of an ImageFolder tree or of a CSV of path,label.

- ``--images ROOT``: torchvision's ImageFolder layout, ``ROOT/CLASS/**/FILE``: every sub-directory of ROOT is a
  class (hidden ones, ``.name``, excepted), its name the class name, class ids in sorted name order (as
  ImageFolder numbers them); the files under it, walked recursively in sorted order, whose extension is an image
  extension (ImageFolder's list plus .gif) are its samples. Other files (a README, ``.DS_Store``) and files lying
  directly in ROOT are not samples: they are counted and named in report.json, not read.
- ``--csv FILE``: a header row with ``path`` and ``label`` columns (other columns are carried into every
  sample's .json, as curate carries extra input columns); a relative path is relative to ``--root`` (default:
  the CSV's directory). Class ids: the distinct labels in sorted order. A row with an empty path or label is an
  ``invalid_row`` in the ledger.

Each entry's ``name`` is what the output calls the file (its path relative to ROOT, or the CSV's value as
written): it is the sample's ``url`` field and, with the class name, its uid, so the same tree gives the same
keys on any machine.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

from aligndata.io.inputs import InputError

# torchvision's IMG_EXTENSIONS, plus .gif (Pillow decodes it; curate keeps GIFs too)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
OTHER_EXAMPLES = 10  # how many of the non-image files report.json names


@dataclass(frozen=True)
class LabelledFile:
    path: str  # where to read it
    name: str  # how the output names it (relative to ROOT, or the CSV's path value)
    label: str  # the class name; "" for an invalid CSV row
    source_file: str
    source_row: int  # 0-based: the file's position in the walk, or the CSV's data row
    extra: dict = field(default_factory=dict)
    invalid: str = ""  # why the row is not usable (invalid_row's detail); "" when it is


@dataclass
class Listing:
    files: list[LabelledFile]
    classes: list[str]  # class id i = classes[i]
    other_files: int = 0
    other_examples: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    def note_other(self, name: str) -> None:
        self.other_files += 1
        if len(self.other_examples) < OTHER_EXAMPLES:
            self.other_examples.append(name)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def list_image_folder(root: str) -> Listing:
    if not os.path.isdir(root):
        raise InputError(f"--images {root}: not a directory (expected ROOT/CLASS/*.jpg, torchvision's ImageFolder)")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not classes:
        raise InputError(f"--images {root}: no class directories (expected ROOT/CLASS/*.jpg)")
    listing = Listing(files=[], classes=classes)
    for entry in entries:
        if not entry.is_dir():
            listing.note_other(entry.name)
    for label in classes:
        found = 0
        for directory, subdirs, names in os.walk(os.path.join(root, label), followlinks=True):
            subdirs.sort()
            for name in sorted(names):
                full = os.path.join(directory, name)
                relative = os.path.relpath(full, root).replace(os.sep, "/")
                if not is_image_name(name):
                    listing.note_other(relative)
                    continue
                listing.files.append(LabelledFile(full, relative, label, root, len(listing.files)))
                found += 1
        if not found:
            listing.empty_classes.append(label)
    return listing


def list_csv(path: str, root: str | None = None) -> Listing:
    base = root if root is not None else os.path.dirname(os.path.abspath(path))
    try:
        handle = open(path, encoding="utf-8", newline="")
    except OSError as err:
        raise InputError(f"--csv {path}: {err.strerror or err}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns or "label" not in columns:
            raise InputError(f"--csv {path}: needs a header row with 'path' and 'label' columns, found "
                             f"{', '.join(map(repr, columns)) or 'no header'}")
        files = []
        try:
            for row_number, row in enumerate(reader):
                value = (row.get("path") or "").strip()
                label = (row.get("label") or "").strip()
                extra = {k: v for k, v in row.items() if k not in ("path", "label") and k is not None}
                invalid = "empty_path" if not value else "empty_label" if not label else \
                    "label_with_line_break" if "\n" in label or "\r" in label else ""
                full = value if os.path.isabs(value) else os.path.join(base, value)
                files.append(LabelledFile(full, value, label, path, row_number, extra, invalid))
        except (csv.Error, UnicodeDecodeError) as err:
            raise InputError(f"--csv {path}: cannot be read as UTF-8 CSV ({err})") from None
    if not files:
        raise InputError(f"--csv {path}: no rows under the header")
    classes = sorted({f.label for f in files if not f.invalid})
    return Listing(files=files, classes=classes)
