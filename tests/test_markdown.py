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


def test_a_results_readme_ends_with_its_folders_history(tmp_path) -> None:
    """The committed results' READMEs end with their folder's HISTORY.md, word for word; a
    folder without one (a rerun elsewhere, a quick protocol) has no history."""
    assert history_lines(tmp_path) == []
    for folder in ("claims", "ics", "ics/proxy"):
        history = history_lines(REPO / "results" / folder)
        assert history[0] == "## History of this result"
        readme = (REPO / "results" / folder / "README.md").read_text()
        assert readme.endswith("\n\n" + "\n".join(history) + "\n")
