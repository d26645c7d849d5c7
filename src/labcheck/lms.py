"""Grade files an LMS imports as they are: one column for the whole assignment, one row per student.

    lms.write_all(OUT / "lms", table, assignment="Lab 3: SGD")   (labcheck grade --roster writes them)

  canvas.csv       Canvas's gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, then the
                   assignment (a new column creates the assignment); a "Points Possible" row under the
                   header gives its maximum. Students are matched by SIS User ID (the roster's student_id).
  moodle.csv       Moodle's CSV grade import: "Email address" (to map to the user's email), "ID number",
                   then the assignment (mapped to a new grade item, named by its header).
  brightspace.csv  Brightspace's grade import: OrgDefinedId (the roster's student_id), "<item> Points
                   Grade", and the "End-of-Line Indicator" column of its sample file ("#" on every row).

Only students the roster names are exported (an identifier the LMS does not know fails its import);
`unmatched` lists the others so that the command can say so. A student with two graded submissions is
an error: which one counts is the instructor's call.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

PLATFORMS = ("canvas", "moodle", "brightspace")
CANVAS_IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_IDENTITY = ("Email address", "ID number")
BRIGHTSPACE_ID, BRIGHTSPACE_END = "OrgDefinedId", "End-of-Line Indicator"


@dataclasses.dataclass(frozen=True)
class Grade:
    student_id: str
    email: str
    name: str
    score: float
    max_score: float
    file: str  # the file the student handed in


def grades(table: list[dict]) -> tuple[list[Grade], list[str]]:
    """(one Grade per rostered student, sorted by id; the files no roster row names)."""
    found: dict[str, Grade] = {}
    unmatched = []
    for row in table:
        student = row.get("student")
        if student is None:
            unmatched.append(row["file"])
            continue
        if student.student_id in found:
            raise ValueError(f"student {student.student_id} ({student.name}) has two graded submissions, "
                             f"{found[student.student_id].file} and {row['file']}: keep one in the roster")
        found[student.student_id] = Grade(student.student_id, student.email, student.name, row["score"],
                                          row["max_score"], row["file"])
    return sorted(found.values(), key=lambda g: g.student_id), unmatched


def _write(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def _points(value: float) -> str:
    return f"{value:g}"


def canvas(grades_: list[Grade], assignment: str) -> list[list[str]]:
    max_score = max((g.max_score for g in grades_), default=0.0)
    return ([[*CANVAS_IDENTITY, assignment], ["Points Possible", "", "", "", "", _points(max_score)]]
            + [[g.name, "", g.student_id, "", "", _points(g.score)] for g in grades_])


def moodle(grades_: list[Grade], assignment: str) -> list[list[str]]:
    return [[*MOODLE_IDENTITY, assignment]] + [[g.email, g.student_id, _points(g.score)] for g in grades_]


def brightspace(grades_: list[Grade], assignment: str) -> list[list[str]]:
    return ([[BRIGHTSPACE_ID, f"{assignment} Points Grade", BRIGHTSPACE_END]]
            + [[g.student_id, _points(g.score), "#"] for g in grades_])


def write_all(folder: str | os.PathLike, table: list[dict], assignment: str) -> tuple[dict[str, Path], list[str]]:
    """Write every platform's file to `folder`; ({platform: path}, files left out for want of a roster row)."""
    found, unmatched = grades(table)
    writers = {"canvas": canvas, "moodle": moodle, "brightspace": brightspace}
    paths = {name: _write(Path(folder) / f"{name}.csv", writers[name](found, assignment)) for name in PLATFORMS}
    return paths, unmatched
