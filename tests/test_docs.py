"""README.md and docs/*.md quote results only through generated blocks (bnrepro.docs)."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from bnrepro import docs, drift
from bnrepro.experiments.figure1 import report as figure1_report
from bnrepro.experiments.ics import blocks as ics_blocks
from bnrepro.experiments.sensitivity import report as sensitivity_report

RESULTS = REPO / "results"
# An accuracy-like decimal of at least three significant digits in prose (0.9749, 0.773):
# shorter ones (0.1, 0.9) are the configs' values, and numbers above 1 (timings, versions,
# ratios) would match some column of the results by chance.
DECIMAL = re.compile(r"(?<![\w.])0\.\d{3,}(?![\w.])")


def prose(text: str) -> str:
    """`text` without its generated blocks, fenced code, inline code and link targets."""
    lines = text.splitlines(keepends=True)
    for block in reversed(docs.blocks(lines, "page")):
        del lines[block.begin : block.end + 1]
    text = "".join(lines)
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
    with pytest.raises(docs.UnknownBlock, match="line 1: .*'nope'.*figure1-headline"):
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
    assert "with BN the net ends at 0.5000" in figure1_report.figure1_headline(Path(tmp_path))


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
    assert len(stderr) == 2 and expected in stderr[0]
    assert stderr[0].startswith("bnrepro: README.md line 1, block 'claims-headline': ")
    assert "Fix: restore the committed results with `git checkout -- results/`" in stderr[0]
    assert page.read_text() == text


HEADLINE = "<!-- begin generated: figure1-headline -->\nold\n<!-- end generated -->\n"


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A tree of one page, README.md, and a copy of the results its figure1 headline reads:
    what `python -m bnrepro.docs` rewrites there."""
    for folder in ("figure1", "figure1_momentum"):
        shutil.copytree(RESULTS / folder, tmp_path / "results" / folder)
    page = tmp_path / "README.md"
    page.write_text("Intro.\n" + HEADLINE)
    monkeypatch.setattr(docs, "REPO", tmp_path)
    monkeypatch.setattr(docs, "pages", lambda: [page])
    return tmp_path


def refused(site: Path, capsys, *expected: str) -> None:
    """Both `make docs` and `--check` exit 2 naming the problem, and the page keeps its bytes
    (and `--check` does not advise `make docs`)."""
    before = (site / "README.md").read_bytes()
    for argv in ([], ["--check"]):
        assert docs.main(argv) == 2
        message = capsys.readouterr().err
        assert message.startswith("bnrepro: ") and "Nothing was written. Fix: " in message
        assert len(message.strip().splitlines()) == 1 and "differ from what" not in message
        for text in expected:
            assert text in message
    assert (site / "README.md").read_bytes() == before


def test_a_results_csv_cut_mid_row_is_not_published(site, capsys) -> None:
    summary = site / "results" / "figure1" / "summary.csv"
    summary.write_bytes(summary.read_bytes()[:-15])
    refused(site, capsys, "README.md line 2, block 'figure1-headline': ", f"{summary} ends in")


def test_a_missing_number_is_not_published_as_nan(site, capsys) -> None:
    summary = site / "results" / "figure1" / "summary.csv"
    frame = pd.read_csv(summary)
    frame.loc[frame.variant == "bn", "final_test_acc"] = None
    frame.to_csv(summary, index=False)
    refused(site, capsys, "README.md line 2: block 'figure1-headline' would publish nan")


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (
            "<!-- begin generated: claims-headline -->\n" + "hand-written\n" * 27 + HEADLINE,
            "README.md line 29: the begin marker of block 'figure1-headline' comes before the "
            "end marker of block 'claims-headline', begun at line 1.",
        ),
        (
            HEADLINE + "<!-- begin generated: claims-headline -->\nhand-written\n",
            "README.md line 4: the begin marker of block 'claims-headline' has no end marker",
        ),
        (
            HEADLINE.replace("end generated -->", "end generated ->"),
            "README.md line 3: '<!-- end generated ->' is a damaged marker.",
        ),
        (
            "hand-written\n<!-- end generated -->\n" + HEADLINE,
            "README.md line 2: an end marker with no begin marker above it.",
        ),
    ],
    ids=["a stray begin marker", "a begin marker without its end", "a damaged end marker",
         "an end marker alone"],
)  # fmt: skip
def test_a_damaged_page_structure_is_refused_naming_the_line(site, capsys, page, expected) -> None:
    (site / "README.md").write_text(page)
    refused(site, capsys, expected)


def test_docs_ics_dates_each_results_thresholds_as_its_claims_csv_does() -> None:
    """docs/ics.md once said every threshold was committed before the runs it judges, while
    results/ics/proxy/'s rows say committed after: the page now quotes, per result, what each
    claims.csv's threshold_fixed says, and states no order of its own."""
    text = ics_blocks.thresholds_fixed(RESULTS, ("ics", "ics/proxy"))
    lines = dict(zip(("ics", "ics/proxy"), text.splitlines(), strict=True))
    for folder, line in lines.items():
        fixed = pd.read_csv(RESULTS / folder / "claims.csv").threshold_fixed
        assert line.startswith(f"- `results/{folder}/`: ")
        for said, count in fixed.value_counts().items():
            assert f"{said} ({count} of {len(fixed)})" in line
    page = (REPO / "docs" / "ics.md").read_text()
    assert text in page and "committed before the runs it judges" not in page


def test_the_ics_headline_says_what_each_measure_of_ics_says() -> None:
    """The gradient-based ICS says BN did not reduce it; the percentile drift of the same runs
    says the input without BN drifted more (results/ics/proxy: 7.8 to 30 times): the front
    page names both, not the first alone."""
    headline = ics_blocks.ics_headline(RESULTS)
    assert headline.count("by Santurkar et al.'s gradient-based ICS measure") == 2
    assert headline.count("by the percentile drift of") == 2
    curves = pd.read_csv(RESULTS / "ics" / "proxy" / "curves.csv").dropna(subset=["p50"])
    moved = drift.drift_by(curves, ["variant", "seed"])
    ratio = moved.xs("inception") / moved.xs("bn_baseline")  # from the probe, not the claims
    assert f"(no BN / BN {ratio.min():.4g} to {ratio.max():.4g})" in headline


def test_the_init_std_1_row_is_measured_against_the_default_protocols_gap() -> None:
    """docs/sensitivity.md once called every gap outside the stuck cells small; the init std 1
    row is +1.1 to +2.6 points, several times the default protocol's: the block says so from
    members.csv, computed here from its rows alone."""
    members = pd.read_csv(RESULTS / "sensitivity" / "members.csv")
    members = members[~members.diverged]
    gap = members.pivot_table("final_acc", ["optimizer", "lr", "init_std"], "net")
    gap = (gap.bn - gap.plain) * 100
    row = gap[
        (gap.index.get_level_values("init_std") == 1) & (gap.index.get_level_values("lr") < 1)
    ]
    default = gap["sgd", 0.1, 0.1]
    line = sensitivity_report.widest_std_gaps(pd.read_csv(RESULTS / "sensitivity" / "members.csv"))
    assert f"BN ends {row.min():+.2f} to {row.max():+.2f} points ahead" in line
    assert f"{row.min() / default:.1f} to {row.max() / default:.1f} times" in line
    assert row.min() / default > 2, "the row is not what the page calls it"
    assert line in (REPO / "docs" / "sensitivity.md").read_text()
