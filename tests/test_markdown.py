from bnrepro.markdown import table


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
