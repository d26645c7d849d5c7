"""Who handed in each submission: a class roster, or Gradescope's submission_metadata.json.

    roster = read_csv("roster.csv")          # columns file,student_id,email,name (others ignored)
    roster.find(Path("josé garcía?v2.py"), "jos_garc_a_v2")   -> Student | None
    from_gradescope_metadata(path)           # Gradescope's /autograder/submission_metadata.json

A roster row names a submission by the file name the student handed in, exactly as it is on disk;
the report folder's sanitised name (labcheck.grade) is accepted too. Where no row names a submission,
a submission_metadata.json inside the submission's folder (a Gradescope export keeps one per
submission) names its first submitter.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

COLUMNS = ("file", "student_id", "email", "name")  # what a roster must have
GRADESCOPE_METADATA = "submission_metadata.json"


class RosterError(ValueError):
    """A roster that cannot be used as it is (missing columns, a file named twice)."""


@dataclasses.dataclass(frozen=True)
class Student:
    student_id: str  # the institution's id: Canvas's SIS User ID, Brightspace's OrgDefinedId, Moodle's ID number
    email: str
    name: str
    source: str  # where this came from: "roster.csv:3", "submission_metadata.json"


@dataclasses.dataclass
class Roster:
    by_file: dict[str, Student]

    def find(self, submission: Path, report_name: str | None = None) -> Student | None:
        """The student of a submission: by its file name, its report name, else its Gradescope metadata."""
        for key in (Path(submission).name, report_name):
            if key and key in self.by_file:
                return self.by_file[key]
        metadata = Path(submission) / GRADESCOPE_METADATA
        return from_gradescope_metadata(metadata) if metadata.is_file() else None


def read_csv(path: str | os.PathLike) -> Roster:
    """The roster in `path` (RosterError says what is wrong with it)."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets write a BOM
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RosterError(f"{path}: no column {', '.join(missing)} (a roster has {','.join(COLUMNS)})")
        by_file: dict[str, Student] = {}
        for line, row in enumerate(reader, start=2):
            file = row["file"].strip()
            if not file:
                continue
            if file in by_file:
                raise RosterError(f"{path}:{line}: {file!r} is named twice (first at {by_file[file].source})")
            by_file[file] = Student(row["student_id"].strip(), row["email"].strip(), row["name"].strip(),
                                    f"{Path(path).name}:{line}")
    return Roster(by_file)


def from_gradescope_metadata(path: str | os.PathLike) -> Student | None:
    """The first submitter in Gradescope's submission_metadata.json ({"users": [{"name", "email", "sid"}]})."""
    users = gradescope_submission(path).get("students") or []
    if not users:
        return None
    return Student(*(str(users[0].get(key) or "") for key in ("sid", "email", "name")), GRADESCOPE_METADATA)


def gradescope_submission(path: str | os.PathLike) -> dict:
    """What a Gradescope results.json keeps of submission_metadata.json: the submitters, when it was
    submitted and the due date (empty where the file is missing or unreadable)."""
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict):
        return {}
    users = [{key: u.get(key) for key in ("name", "email", "sid")} for u in meta.get("users") or []
             if isinstance(u, dict)]
    return {"students": users, "submitted_at": meta.get("created_at"),
            "due_date": (meta.get("assignment") or {}).get("due_date")}
