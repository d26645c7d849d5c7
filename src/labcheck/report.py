"""Grade reports: Gradescope results.json, a Markdown summary and a class gradebook CSV."""
from __future__ import annotations


def gradescope_results(tests: list[dict]) -> dict:
    """Gradescope's results.json: the total and one entry per graded test."""
    entries = [
        {key: t[key] for key in ("name", "score", "max_score", "status", "output", "visibility")}
        for t in tests
    ]
    return {
        "score": round(sum(t["score"] for t in tests), 4),
        "max_score": round(sum(t["max_score"] for t in tests), 4),
        "tests": entries,
    }
