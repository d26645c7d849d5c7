"""Rosters and the LMS grade imports (labcheck.roster, labcheck.lms, the gradebook's identity columns).

Each export is read back by a checker that encodes its platform's documented import layout:
  - Canvas, "How do I import grades in the Gradebook?" (Instructor Guide): the header row starts with
    Student, ID, SIS User ID, SIS Login ID, Section; every further column is an assignment (a new name
    creates one); an optional second row starting "Points Possible" gives each assignment's maximum;
    a student is matched by ID, SIS User ID or SIS Login ID.
  - Moodle, grade/import/csv (gradeimport_csv_load_data): a header row; the user is mapped from one
    column by id, idnumber, email or username; a new grade item takes its header as its name; a grade
    is a number (unformat_float) or "-"/"" for none, and a new item's grade may not exceed 100
    (gradepointmax's default).
  - Brightspace, "Importing grades" (D2L Community): OrgDefinedId and/or Username first, each numeric
    item as "<item> Points Grade", and the sample file's last column "End-of-Line Indicator" = "#".
"""
import csv
from pathlib import Path

import pytest

from labcheck import grade, lms, report, roster

TESTS = [("test_a", 2.0), ("test_b", 3.0)]
CLASS = {  # the file a student handed in -> (report name labcheck.grade gives it, score)
    "josé garcía?v2.py": ("jos_garc_a_v2", 5.0),
    "bob.ipynb": ("bob", 2.0),
    "stranger.py": ("stranger", 0.0),  # handed in, but on no roster row
}
ROSTER = ("file,student_id,email,name,section\n"
          "josé garcía?v2.py,1001,jose@example.edu,\"García, José\",A\n"
          "bob.ipynb,1002,bob@example.edu,\"Builder, Bob\",B\n"
          "absent.py,1003,ann@example.edu,\"Absent, Ann\",A\n")


def graded_class(tmp_path: Path):
    subs, results = [], {}
    for file, (name, score) in CLASS.items():
        subs.append(grade.Submission(tmp_path / "class" / file, "sgd", name, Path("t.py")))
        tests = [{"name": t, "score": min(p, score), "max_score": p, "status": "passed", "output": ""} for t, p in TESTS]
        results[name] = report.gradescope_results(tests)
        results[name]["score"] = score
    path = tmp_path / "roster.csv"
    path.write_text(ROSTER, encoding="utf-8")
    return subs, results, roster.read_csv(path)


def read(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def check_canvas(rows: list[list[str]], points: float) -> dict[str, float]:
    header = rows[0]
    assert header[:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"] and len(header) == 6
    assert rows[1][0] == "Points Possible" and float(rows[1][5]) == points
    grades = {}
    for row in rows[2:]:
        assert len(row) == 6 and row[2], row  # matched by SIS User ID
        grades[row[2]] = float(row[5])
        assert 0 <= grades[row[2]] <= points
    return grades


def check_moodle(rows: list[list[str]]) -> dict[str, float]:
    header = [h.strip() for h in rows[0]]
    assert header[0] == "Email address" and len(header) == 3  # mapped from: email; one new grade item
    grades = {}
    for row in rows[1:]:
        assert "@" in row[0] and row[2] not in ("", "-")
        grades[row[0]] = float(row[2])
        assert grades[row[0]] <= 100  # a new grade item's gradepointmax
    return grades


def check_brightspace(rows: list[list[str]], item: str) -> dict[str, float]:
    assert rows[0] == ["OrgDefinedId", f"{item} Points Grade", "End-of-Line Indicator"]
    assert all(row[-1] == "#" and len(row) == 3 for row in rows[1:])
    return {row[0]: float(row[1]) for row in rows[1:]}


def test_the_lms_exports_follow_each_documented_layout(tmp_path):
    subs, results, class_roster = graded_class(tmp_path)
    table = report.rows(subs, results, class_roster)
    written, unmatched = lms.write_all(tmp_path / "lms", table, "Lab 3: SGD")
    assert unmatched == ["stranger.py"]  # and the rostered student without a submission is not invented
    assert check_canvas(read(written["canvas"]), 5.0) == {"1001": 5.0, "1002": 2.0}
    assert read(written["canvas"])[2][0] == "García, José"  # UTF-8 names survive
    assert check_moodle(read(written["moodle"])) == {"jose@example.edu": 5.0, "bob@example.edu": 2.0}
    assert check_brightspace(read(written["brightspace"]), "Lab 3: SGD") == {"1001": 5.0, "1002": 2.0}


def test_the_gradebook_and_summary_keep_the_original_file_name_and_the_student(tmp_path):
    subs, results, class_roster = graded_class(tmp_path)
    table = report.rows(subs, results, class_roster)
    report.write_gradebook(tmp_path / "gradebook.csv", table)
    with open(tmp_path / "gradebook.csv", newline="", encoding="utf-8") as f:
        book = {r["name"]: r for r in csv.DictReader(f)}
    assert book["jos_garc_a_v2"]["file"] == "josé garcía?v2.py" and book["jos_garc_a_v2"]["student_id"] == "1001"
    assert book["stranger"]["student_id"] == "" and book["stranger"]["file"] == "stranger.py"
    assert "| jos_garc_a_v2 | josé garcía?v2.py | García, José | sgd | 5/5 |" in report.summary_markdown(table)


def test_a_student_named_twice_or_a_broken_roster_is_refused(tmp_path):
    subs, results, class_roster = graded_class(tmp_path)
    class_roster.by_file["stranger.py"] = class_roster.by_file["bob.ipynb"]
    with pytest.raises(ValueError, match="1002 .* has two graded submissions, bob.ipynb and stranger.py"):
        lms.grades(report.rows(subs, results, class_roster))
    (tmp_path / "bad.csv").write_text("file,email,name\nx.py,x@e.edu,X\n")
    with pytest.raises(roster.RosterError, match="no column student_id"):
        roster.read_csv(tmp_path / "bad.csv")
    (tmp_path / "twice.csv").write_text("file,student_id,email,name\nx.py,1,a@e,A\nx.py,2,b@e,B\n")
    with pytest.raises(roster.RosterError, match=r"twice.csv:3: 'x.py' is named twice \(first at twice.csv:2\)"):
        roster.read_csv(tmp_path / "twice.csv")


def test_gradescope_metadata_names_a_submission_the_roster_does_not(tmp_path):
    folder = tmp_path / "submission_4242"
    folder.mkdir()
    (folder / roster.GRADESCOPE_METADATA).write_text(
        '{"created_at": "2026-11-20T10:00:00", "assignment": {"due_date": "2026-11-21T23:59:00"},'
        ' "users": [{"name": "Ann Absent", "email": "ann@example.edu", "sid": "1003"}]}')
    student = roster.Roster({}).find(folder)
    assert (student.student_id, student.email, student.name) == ("1003", "ann@example.edu", "Ann Absent")
    assert roster.gradescope_submission(folder / roster.GRADESCOPE_METADATA)["due_date"] == "2026-11-21T23:59:00"
    assert roster.Roster({}).find(tmp_path / "nothing.py") is None
