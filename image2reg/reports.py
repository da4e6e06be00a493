"""The page a reader opens first: ``reports/<dataset>/index.html``.

It shows the pipeline as a figure, each stage with its state, duration and a link to its report, and the
headline numbers of the run, each read from the ``summary.json`` a stage wrote (never typed by hand):
impactful genes, the CNN's cross-validated balanced accuracy against chance, the interactome's size,
the graph autoencoder's link-prediction AUC, the LOTO top-k accuracy against random and mean baselines
with p-values, and the validation on a second screen. The runbook writes it after every run.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from image2reg.layout import RunLayout, write_text_atomic
from image2reg.stages import Stage, task_label

STATE_COLORS = {"complete": "#27ae60", "started": "#e67e22", "not run": "#bdc3c7"}


@dataclass(frozen=True)
class StageState:
    """One task of a run as the index shows it."""

    stage: Stage
    fold: int | None
    state: str            # complete | started (running, interrupted or failed) | not run
    duration_s: float | None
    finished_at: str | None
    report: str | None    # the report's path relative to the index, HTML when there is one

    @property
    def label(self) -> str:
        return task_label(self.stage, self.fold)


@dataclass(frozen=True)
class Headline:
    """One number of the index: what it is, its value, what it is compared with, and the test's p-value."""

    stage: str
    what: str
    value: str
    against: str = ""
    p_value: str = ""


def stage_states(layout: RunLayout, tasks: Sequence[tuple[Stage, int | None]]) -> list[StageState]:
    """The state of each task, from the runbook's manifests (``runs/<dataset>/.manifests/``)."""
    states = []
    for stage, fold in tasks:
        path = layout.manifest(stage, fold)
        manifest = json.loads(path.read_text()) if path.is_file() else None
        report = layout.report(stage, fold)
        shown = report.with_suffix(".html") if report.with_suffix(".html").is_file() else report
        states.append(StageState(
            stage=stage, fold=fold, state="not run" if manifest is None else manifest["status"],
            duration_s=manifest.get("duration_s") if manifest else None,
            finished_at=manifest.get("finished_at") if manifest else None,
            report=shown.name if shown.is_file() else None))
    return states


def _summary(layout: RunLayout, stage: str) -> dict | None:
    path = layout.artifact(stage, "summary")
    return json.loads(path.read_text()) if path.is_file() else None


def _p(value: float | None) -> str:
    return "" if value is None else f"p = {value:.3g}"


def headline_numbers(layout: RunLayout) -> list[Headline]:
    """The run's headline numbers, each from a stage's ``summary.json`` (stages without one are left out)."""
    rows: list[Headline] = []
    screen = _summary(layout, "screen")
    if screen:
        shown = ", ".join(screen["impactful_genes"][:12]) + (" ..." if len(screen["impactful_genes"]) > 12 else "")
        rows.append(Headline("02 screen", "impactful genes", f"{screen['impactful']} of {screen['screened']} screened",
                             f"mean specificity {screen['specificity_impactful_mean']:.3f} (chance 0.5): {shown}"))
    embeddings = _summary(layout, "embeddings")
    if embeddings:
        rows.append(Headline("03 embeddings", "CNN test balanced accuracy (k-fold)",
                             f"{embeddings['test_bac_mean']:.3f} ± {embeddings['test_bac_sd']:.3f}",
                             f"chance {embeddings['chance']:.3f}; classical features "
                             f"{embeddings['baseline_bac_mean']:.3f}"))
    interactome = _summary(layout, "interactome")
    if interactome:
        rows.append(Headline("05 interactome", "interactome", f"{interactome['n_genes']} genes, "
                             f"{interactome['n_edges']} edges",
                             f"{interactome['targets_covered']} of {interactome['targets']} impactful genes covered"))
    regulatory = _summary(layout, "regulatory")
    if regulatory:
        rows.append(Headline("06 regulatory", "graph autoencoder: link prediction AUC (test edges)",
                             f"{regulatory['test_auc']:.3f}", f"chance 0.5; AP {regulatory['test_ap']:.3f}"))
    translation = _summary(layout, "translation")
    if translation:
        n, candidates = translation["targets"], translation["candidates"]
        for k in (k for k in (5, 10) if f"top{k}" in translation):
            rows.append(Headline(
                "07 translation", f"LOTO top-{k} accuracy ({n} held-out genes, {candidates} candidates)",
                f"{translation[f'top{k}']:.3f}", f"random {min(k / candidates, 1.0):.3f}",
                _p(translation.get(f"p_random_top{k}"))))
            if f"p_mean_all_top{k}" in translation:
                baseline = translation.get(f"mean_all_top{k}")
                rows.append(Headline("07 translation", f"top-{k} against the mean baseline (paired)",
                                     f"{translation[f'top{k}']:.3f}", "mean of all genes' embeddings"
                                     + ("" if baseline is None else f" {baseline:.3f}"),
                                     _p(translation[f"p_mean_all_top{k}"])))
        if "auc20" in translation:
            rows.append(Headline("07 translation", "area under the top-k curve up to 20",
                                 f"{translation['auc20']:.3f}", "random genes", _p(translation.get("p_random_auc20"))))
    validation = _summary(layout, "validation")
    if validation:
        for part, label in (("restricted", "genes of the reference's clusters"), ("all", "all test genes")):
            if f"{part}_top5" in validation and f"{part}_mean_all_top5" in validation:
                rows.append(Headline("08 validation", f"top-5 on new genes ({label})",
                                     f"{validation[f'{part}_top5']:.3f}",
                                     f"mean baseline {validation[f'{part}_mean_all_top5']:.3f}",
                                     _p(validation.get(f"{part}_p_random_top5"))))
    return rows


def pipeline_svg(states: Sequence[StageState]) -> str:
    """The stages as a row of boxes joined by arrows, each coloured by its state and linked to its report."""
    stages = list(dict.fromkeys(state.stage for state in states))
    by_stage = {stage: [s for s in states if s.stage == stage] for stage in stages}
    width, height, gap = 108, 54, 16
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{len(stages) * (width + gap)}" height="{height + 30}" '
             f'role="img" aria-label="pipeline">']
    for i, stage in enumerate(stages):
        tasks = by_stage[stage]
        state = ("complete" if all(t.state == "complete" for t in tasks) else "not run"
                 if all(t.state == "not run" for t in tasks) else "started")
        x = i * (width + gap)
        box = (f'<rect x="{x}" y="10" width="{width}" height="{height}" rx="8" fill="{STATE_COLORS[state]}"/>'
               f'<text x="{x + width / 2}" y="33" text-anchor="middle" font-size="13" fill="white" '
               f'font-family="sans-serif">{html.escape(stage.id)}</text>'
               f'<text x="{x + width / 2}" y="51" text-anchor="middle" font-size="11" fill="white" '
               f'font-family="sans-serif">{state}</text>')
        link = next((t.report for t in tasks if t.report), None)
        parts.append(f'<a href="{html.escape(link)}">{box}</a>' if link else box)
        if i:
            parts.append(f'<path d="M{x - gap + 2} {10 + height / 2} L{x - 4} {10 + height / 2}" stroke="#555" '
                         f'stroke-width="2" marker-end="url(#arrow)"/>')
    parts.insert(1, '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="6" refY="3" orient="auto">'
                    '<path d="M0,0 L6,3 L0,6 z" fill="#555"/></marker></defs>')
    parts.append("</svg>")
    return "".join(parts)


def index_html(dataset: str, states: Sequence[StageState], headlines: Sequence[Headline]) -> str:
    """The index page: pipeline figure, stage table, headline numbers."""
    def cells(values, tag="td"):
        return "".join(f"<{tag}>{value}</{tag}>" for value in values)

    stage_rows = "".join(
        "<tr>" + cells([
            html.escape(state.label), html.escape(state.stage.title),
            f'<span class="state" style="background:{STATE_COLORS.get(state.state, "#999")}">{state.state}</span>',
            "" if state.duration_s is None else f"{state.duration_s:.0f} s",
            html.escape(state.finished_at or ""),
            f'<a href="{html.escape(state.report)}">report</a>' if state.report else "",
        ]) + "</tr>" for state in states)
    headline_rows = "".join("<tr>" + cells([html.escape(h.stage), html.escape(h.what), f"<b>{html.escape(h.value)}</b>",
                                            html.escape(h.against), html.escape(h.p_value)]) + "</tr>"
                            for h in headlines)
    headline_table = (f"<table><thead><tr>{cells(['stage', 'what', 'value', 'compared with', 'test'], 'th')}"
                      f"</tr></thead><tbody>{headline_rows}</tbody></table>" if headlines
                      else "<p>No stage has written its summary yet.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>image2reg · {html.escape(dataset)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }}
.state {{ color: white; border-radius: 4px; padding: 1px 6px; font-size: 90%; }}
.figure {{ overflow-x: auto; }}
</style></head><body>
<h1>image2reg · {html.escape(dataset)}</h1>
<p>From chromatin images of a perturbation screen to gene regulation: each box is a stage; click it for its report.</p>
<div class="figure">{pipeline_svg(states)}</div>
<h2>Headline numbers</h2>
{headline_table}
<h2>Stages</h2>
<table><thead><tr>{cells(['task', 'what it does', 'state', 'duration', 'finished', 'report'], 'th')}</tr></thead>
<tbody>{stage_rows}</tbody></table>
<p>Every number on this page is read from the stages' <code>summary.json</code> files under
<code>runs/{html.escape(dataset)}/</code>.</p>
</body></html>
"""


def write_index(layout: RunLayout, tasks: Sequence[tuple[Stage, int | None]]) -> Path:
    """Write ``reports/<dataset>/index.html`` (atomically) for the run's tasks and return its path."""
    path = layout.reports / "index.html"
    write_text_atomic(path, index_html(layout.dataset, stage_states(layout, tasks), headline_numbers(layout)))
    return path
