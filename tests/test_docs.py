"""README.md and docs/*.md quote results only through generated blocks (bnrepro.docs)."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from bnrepro import docs

RESULTS = REPO / "results"
# An accuracy-like decimal of at least three significant digits in prose (0.9749, 0.773):
# shorter ones (0.1, 0.9) are the configs' values, and numbers above 1 (timings, versions,
# ratios) would match some column of the results by chance.
DECIMAL = re.compile(r"(?<![\w.])0\.\d{3,}(?![\w.])")


def prose(text: str) -> str:
    """`text` without its generated blocks, fenced code, inline code and link targets."""
    text = docs.BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def result_values() -> set[str]:
    """Every accuracy of a results table (a column named *acc*, in a CSV without a `step`
    column: the per-step logs would match any number) as it would be shown at 3 or 4
    decimals; the paper's own numbers (`paper_*` columns) left out."""
    shown = set()
    for path in RESULTS.rglob("*.csv"):
        frame = pd.read_csv(path)
        if "step" in frame.columns:
            continue
        numbers = frame[[c for c in frame if "acc" in c and not c.startswith("paper")]]
        for value in pd.to_numeric(numbers.stack(), errors="coerce").dropna():
            shown.update(f"{value:.{d}f}" for d in (3, 4))
    return shown


def test_every_page_is_what_make_docs_writes() -> None:
    """CI's check that no page quotes a result the data no longer holds: `make docs`, then
    commit, after new results."""
    pages = docs.pages()
    assert REPO / "README.md" in pages and len(pages) >= 10
    for page in pages:
        text = page.read_text()
        assert docs.render(text, RESULTS) == text, f"{page}: run `make docs`"


def test_prose_quotes_no_number_a_results_table_holds() -> None:
    values = result_values()
    found = []
    for page in docs.pages():
        for number in DECIMAL.findall(prose(page.read_text())):
            if number in values:
                found.append(f"{page.relative_to(REPO)}: {number}")
    assert not found, "numbers from results/ outside generated blocks: " + ", ".join(found)


def test_a_block_is_rewritten_from_the_results_and_text_around_it_is_kept() -> None:
    page = (
        "Intro 0.1.\n<!-- begin generated: ics-claims -->\nstale 0.5\n<!-- end generated -->\n"
        "After.\n"
    )
    written = docs.render(page, RESULTS)
    assert written.startswith("Intro 0.1.\n<!-- begin generated: ics-claims -->\n| claim |")
    assert written.endswith("<!-- end generated -->\nAfter.\n") and "stale" not in written
    claims = pd.read_csv(RESULTS / "ics" / "claims.csv")
    assert all(verdict in written for verdict in claims.verdict)
    assert docs.render(written, RESULTS) == written


def test_an_unknown_block_is_refused_with_the_names_it_takes() -> None:
    with pytest.raises(docs.UnknownBlock, match="'nope'.*figure1-headline"):
        docs.render("<!-- begin generated: nope -->\n<!-- end generated -->\n", RESULTS)


def test_check_names_a_stale_page_and_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "docs").mkdir()
    page = tmp_path / "README.md"
    page.write_text(
        "<!-- begin generated: claims-headline -->\nSTALE-TEXT\n<!-- end generated -->\n"
    )
    (tmp_path / "results").symlink_to(RESULTS)
    monkeypatch.setattr(docs, "REPO", tmp_path)
    monkeypatch.setattr(docs, "pages", lambda: [page])
    assert docs.main(["--check"]) == 1
    assert "README.md differ" in capsys.readouterr().err and "STALE-TEXT" in page.read_text()
    assert docs.main([]) == 0 and "STALE-TEXT" not in page.read_text()
    assert docs.main(["--check"]) == 0


def test_the_headline_of_figure1_follows_its_summary(tmp_path) -> None:
    """A changed result changes the sentence: the generated text is computed, not stored."""
    for folder in ("figure1", "figure1_momentum"):
        target = tmp_path / folder
        target.mkdir()
        for name in ("summary.csv", "curves.csv"):
            (target / name).write_bytes((RESULTS / folder / name).read_bytes())
    summary = pd.read_csv(tmp_path / "figure1" / "summary.csv")
    summary.loc[summary.variant == "bn", "final_test_acc"] = 0.5
    summary.to_csv(tmp_path / "figure1" / "summary.csv", index=False)
    assert "with BN the net ends at 0.5000" in docs.figure1_headline(Path(tmp_path))


def random_bytes(results: Path) -> None:
    (results / "claims" / "claims.csv").write_bytes(bytes(range(256)) * 4)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (random_bytes, "claims/claims.csv is not a CSV table: it holds bytes that are not text"),
        (lambda r: (r / "claims" / "claims.csv").unlink(), "claims/claims.csv does not exist"),
        (lambda r: shutil.rmtree(r / "claims"), "results/claims does not exist"),
        (lambda r: shutil.rmtree(r), "results does not exist"),
        (lambda r: (r / "claims" / "claims.csv").write_text(""), "claims.csv is empty"),
    ],
    ids=["random bytes", "a deleted CSV", "a missing folder", "no results/", "an empty CSV"],
)
def test_damaged_results_get_one_paragraph(tmp_path, monkeypatch, capsys, damage, expected):
    page = tmp_path / "README.md"
    text = "<!-- begin generated: claims-headline -->\nold\n<!-- end generated -->\n"
    page.write_text(text)
    shutil.copytree(RESULTS / "claims", tmp_path / "results" / "claims")
    damage(tmp_path / "results")
    monkeypatch.setattr(docs, "REPO", tmp_path)
    monkeypatch.setattr(docs, "pages", lambda: [page])
    assert docs.main(["--check"]) == 2 and docs.main([]) == 2
    stderr = capsys.readouterr().err.splitlines()
    assert len(stderr) == 2 and stderr[0].startswith("README.md: ") and expected in stderr[0]
    assert "Fix: restore the committed results with `git checkout -- results/`" in stderr[0]
    assert page.read_text() == text
