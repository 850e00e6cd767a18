"""The generated blocks of the pages (bnrepro.docs) that quote results/ics/ and
results/ics/proxy/: what each study found, its claims table and when its thresholds were fixed.
They read both studies, so they are a module of their own: the MNIST driver's report does not
import the proxy's modules, which bring the Inception trainer."""

from pathlib import Path

from bnrepro.docblocks import claims_table, csv
from bnrepro.experiments.ics import analysis, proxy_analysis


def ics_findings(results: Path, folder: str) -> str:
    """What `folder`'s results found, in words: what each measure of ICS says (the
    gradient-based one of claim (b) and the percentile drift, which can disagree), which
    landscape measures BN made smaller, and whether noisy BN separated speed from stable
    inputs."""
    study = {"ics": analysis, "ics/proxy": proxy_analysis}[folder]
    measures = analysis.ics_text(study.judged(results / folder), study.PROBED)
    claims = csv(results, f"{folder}/claims.csv")
    landscape = claims[claims.claim.str.startswith("(c)")]
    name = landscape.claim.str.extract(r"median ([^,]+),")[0]
    smaller = ", ".join(name[landscape.verdict == "pass"]) or "none"
    noisy = claims[claims.claim.str.startswith("(a)")].verdict.tolist()
    separated = noisy[0] == "pass" and noisy[1] == "pass"
    return (
        f"{measures}; landscape measures smaller with BN in every seed: {smaller} (of "
        f"{len(landscape)}); noisy BN "
        + (
            "trained about as fast as BN while its inputs drifted more"
            if separated
            else "did not both train about as fast as BN and drift more"
        )
    )


def thresholds_fixed(results: Path, folders: tuple[str, ...]) -> str:
    """What each folder's claims.csv says, in its threshold_fixed column, of when its
    thresholds were first committed against the commit its runs were made from: each text
    with how many of the folder's rows say it."""
    lines = []
    for folder in folders:
        fixed = csv(results, f"{folder}/claims.csv").threshold_fixed
        counts = fixed.value_counts(sort=False)
        said = "; ".join(f"{text} ({count} of {len(fixed)})" for text, count in counts.items())
        lines.append(f"- `results/{folder}/`: {said}")
    return "\n".join(lines)


def ics_headline(results: Path) -> str:
    return (
        "**Internal covariate shift put to the test** (Santurkar et al. 2018). On the MNIST "
        f"net: {ics_findings(results, 'ics')}. On the Inception proxy: "
        f"{ics_findings(results, 'ics/proxy')}. "
        "[results/ics](results/ics/README.md), [results/ics/proxy](results/ics/proxy/README.md), "
        "[docs/ics.md](docs/ics.md)"
    )


BLOCKS = {
    "ics-headline": ics_headline,
    "ics-claims": lambda results: claims_table(results, "ics"),
    "ics-proxy-claims": lambda results: claims_table(results, "ics/proxy"),
    "ics-findings": lambda results: f"Over the seeds: {ics_findings(results, 'ics')}.",
    "ics-proxy-findings": lambda results: f"Over the seeds: {ics_findings(results, 'ics/proxy')}.",
    "ics-thresholds-fixed": lambda results: thresholds_fixed(results, ("ics", "ics/proxy")),
}
