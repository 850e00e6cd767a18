"""CITATION.cff, pyproject.toml and the README's BibTeX entry say the same about the suite
(name, version, description, license, authors, keywords), so a release cannot change one and
not the others."""

import re

import yaml
from conftest import REPO
from test_lock import project


def citation() -> dict:
    return yaml.safe_load((REPO / "CITATION.cff").read_text())


def bibtex_entry(key: str) -> dict[str, str]:
    """The README's BibTeX entry `key`: each field's value without its outer braces, its
    lines joined by single spaces."""
    readme = (REPO / "README.md").read_text()
    body = readme.split(f"{{{key},", 1)[1].split("\n}", 1)[0]
    fields: dict[str, list[str]] = {}
    for line in body.strip().splitlines():
        start = re.match(r"\s*(\w+)\s*=\s*(.*)", line)
        if start:
            name, text = start.groups()
            fields[name] = [text]
        else:
            fields[name].append(line.strip())
    return {name: " ".join(parts).rstrip(",")[1:-1] for name, parts in fields.items()}


def test_citation_cff_matches_pyproject():
    cff, meta = citation(), project()
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == meta["version"]
    assert cff["title"].startswith(f"{meta['name']}: ")
    assert cff["abstract"] == meta["description"]
    assert cff["license"] == meta["license"]
    assert [a["name"] for a in cff["authors"]] == [a["name"] for a in meta["authors"]]
    assert cff["keywords"] == meta["keywords"]
    arxiv = meta["urls"]["Paper"].rpartition("/")[2]
    assert [i["value"] for i in cff["preferred-citation"]["identifiers"]] == [f"arXiv:{arxiv}"]


def test_readme_bibtex_matches_citation_cff():
    cff = citation()
    suite = bibtex_entry("bnrepro")
    assert suite["title"] == cff["title"]
    assert suite["version"] == cff["version"]
    assert suite["license"] == cff["license"]
    assert suite["author"] == "{" + cff["authors"][0]["name"] + "}"
    paper = bibtex_entry("ioffe2015batch")
    cited = cff["preferred-citation"]
    assert paper["title"] == cited["title"]
    assert paper["pages"] == f"{cited['start']}--{cited['end']}"
    assert paper["volume"] == str(cited["volume"])
    assert paper["year"] == str(cited["year"])
