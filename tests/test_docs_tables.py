"""The project's Markdown tables render: header, delimiter row and body rows have the same number of cells."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    "README.md",
    "comfy_nodes/README.md",
    "examples/hub_demo/README.md",
    "pipeline_video_deblur/default_model/HISTORY.md",
    "pipeline_video_deblur/default_model/README.md",
    "train/README.md",
]
DELIMITER = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def cells(line):
    # GitHub splits a row on every pipe that is not backslash-escaped, inside code spans too.
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return len(re.split(r"(?<!\\)\|", body))


def tables(text):
    lines = text.split("\n")
    for i in range(1, len(lines)):
        if lines[i - 1].lstrip().startswith("|") and DELIMITER.match(lines[i]):
            rows = []
            j = i + 1
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append((j + 1, lines[j]))
                j += 1
            yield i, lines[i - 1], lines[i], rows


@pytest.mark.parametrize("doc", DOCS)
def test_every_table_row_has_as_many_cells_as_its_header(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    problems = []
    found = 0
    for line_no, header, delimiter, rows in tables(text):
        found += 1
        n = cells(header)
        if cells(delimiter) != n:
            problems.append(f"{doc}:{line_no + 1}: delimiter row has {cells(delimiter)} cells, header has {n}")
        for row_no, row in rows:
            if cells(row) != n:
                problems.append(f"{doc}:{row_no}: row has {cells(row)} cells, header has {n}")
    assert not problems, "\n".join(problems)
    if doc.startswith("pipeline_video_deblur/default_model/"):
        assert found >= 3, f"{doc}: expected its score tables, found {found} tables"


def test_a_table_whose_delimiter_row_is_one_cell_too_long_is_caught():
    bad = "| a | b |\n|---|---|---|\n| 1 | 2 |\n"
    ((_, header, delimiter, rows),) = tables(bad)
    assert cells(header) == 2 and cells(delimiter) == 3 and cells(rows[0][1]) == 2
    assert cells("| `x \\| y` | z |") == 2
