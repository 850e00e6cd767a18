from conftest import REPO

from bnrepro.markdown import history_lines, table


def test_a_table_is_its_header_its_rule_and_one_line_per_row() -> None:
    lines = table(("seed", "accuracy"), [(0, "0.9712"), (1, "**0.9650**")])
    assert lines == [
        "| seed | accuracy |",
        "|---|---|",
        "| 0 | 0.9712 |",
        "| 1 | **0.9650** |",
    ]


def test_a_table_without_rows_keeps_its_header() -> None:
    assert table(["claim"], []) == ["| claim |", "|---|"]


def test_a_results_readme_links_its_folders_history(tmp_path) -> None:
    """Each committed result with a hand-written HISTORY.md ends its README with the section
    linking it; a folder without one (a rerun elsewhere, a quick protocol) has no such
    section."""
    assert history_lines(tmp_path) == []
    folders = sorted(p.parent for p in (REPO / "results").rglob("HISTORY.md"))
    assert {f.relative_to(REPO / "results").as_posix() for f in folders} >= {
        "claims", "figure2", "ics", "ics/proxy"
    }  # fmt: skip
    for folder in folders:
        section = history_lines(folder)
        assert section[0] == "## History of this result" and "(HISTORY.md)" in section[-1]
        readme = (folder / "README.md").read_text()
        assert readme.endswith("\n\n" + "\n".join(section) + "\n"), folder
