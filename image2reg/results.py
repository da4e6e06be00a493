"""``docs/results.md``: the numbers of a run, rendered from the stages' summaries, never typed by hand.

``python -m image2reg results --dataset demo [--runs-dir runs] [--out docs/results.md]`` reads the
``summary`` artifact of every stage of a run (``runs/<dataset>/<NN>_<stage>/``, see
:data:`image2reg.layout.STAGE_FILES`) and writes one Markdown page: a header saying how it was made,
then per stage a fixed line on what its numbers mean and a table of its values. A value's chance level,
baselines and p-values, where the summary holds them, stand on the model value's row: ``mean_all_top5``
and ``p_random_top5`` beside ``top5``, ``top5_ci_low`` / ``top5_ci_high`` as its interval,
``test_bac_sd`` as the spread of ``test_bac_mean``. Stages without a summary are listed as not run.

The page is the run's regression record: rerun the demo, regenerate the page and ``git diff`` it.
Everything on it comes from the summaries (and, for the header, the runbook's manifests and git), so
the same run always renders the same page.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image2reg.layout import STAGE_FILES, RunLayout, artifact_name, find_project_root, write_text_atomic
from image2reg.stages import STAGES, Stage

#: What each stage's numbers mean, one line per stage (the page's fixed text).
STAGE_NOTES: dict[str, str] = {
    "data": "The raw inputs and the screen's inventory are in the stage's report.",
    "images": "Fields of view read and kept by QC, nuclei segmented and kept by the filters, crops written.",
    "pretrain": "Self-supervised pretraining of the nucleus encoder: the last epoch's contrastive loss and how often "
                "a view finds its partner; then, for a sample of nuclei, the cross-validated R² of a linear "
                "read-out of each group of classical features from the pretrained trunk's embeddings, against "
                "the same network with random weights.",
    "screen": "A gene's specificity score is its mean test balanced accuracy against the control over the folds "
              "(chance 0.5); the genes above the knee of the ranking are the impactful ones; the classical "
              "features' score is the same test on classical features.",
    "embeddings": "Test balanced accuracy over the folds against chance (1 / classes) and a linear classifier on "
                  "classical features; phenotypic activity (mAP against the control, FDR 5 %) of the CNN and of "
                  "the classical profiles.",
    "loto": "Test balanced accuracy against chance; on synthetic data, how often the held-out gene's nearest "
            "trained gene is in its true module, against chance.",
    "interactome": "The prize-collecting Steiner tree at the chosen β: genes, edges, clusters, impactful genes "
                   "covered; on synthetic data, recovery of the true modules against permutations.",
    "regulatory": "Link-prediction AUC and AP on held-out test edges (chance 0.5), also over other edge splits; "
                  "NMI of the embeddings' clusters with reference clusterings.",
    "translation": "Each impactful gene held out in turn, the interactome's genes are ranked by their distance to "
                   "the embedding predicted from its images: top-k accuracy and areas under the top-k curve "
                   "(`aucK`), against a random gene and the mean baselines, with p-values, 95 % intervals and the "
                   "hits a test at p < 0.05 needs.",
    "validation": "Fitted on the impactful genes, the translation ranks the second screen's other interactome "
                  "genes (`restricted_`: test genes in clusters holding training genes; `all_`: every test gene); "
                  "`score` sums the areas under the top-k curve (the reference's JUMP score).",
}

#: Key prefixes that name a baseline of the key without them: ``mean_all_top5`` is the mean baseline of ``top5``.
BASELINES: dict[str, str] = {"random_expected": "random gene", "random": "random gene",
                             "mean_all": "mean of all genes", "train_mean": "mean of the training genes"}
#: Key prefixes that name a p-value of the key without them (``p_<other>`` is shown as ``<other>``).
P_VALUES: dict[str, str] = {"p_random": "random genes", "p_permuted": "shuffled pairs",
                            "p_mean_all": "mean of all genes, paired", "p_train_mean": "mean of training genes, paired"}
#: Key suffixes that describe the spread or the power of the key without them.
SPREAD_SUFFIXES = ("_sd", "_min", "_max", "_ci_low", "_ci_high", "_hits_needed_random", "_hits_needed_paired")
#: Comparisons named outright, per stage: model key → {companion key: label}.
COMPARISONS: dict[str, dict[str, dict[str, str]]] = {
    "pretrain": {f"probe_r2_{group}": {f"probe_r2_{group}_random": "random weights"}
                 for group in ("shape", "intensity", "texture", "radial")},
    "screen": {"specificity_mean": {"chance": "chance", "baseline_mean": "classical features"},
               "specificity_impactful_mean": {"chance": "chance"}},
    "embeddings": {"test_bac_mean": {"chance": "chance", "baseline_bac_mean": "classical features"},
                   "active_cnn": {"active_classical": "classical profiles"},
                   "map_cnn": {"map_classical": "classical profiles"}},
    "loto": {"test_bac_mean": {"chance": "chance"}, "nearest_same_module": {"nearest_same_module_chance": "chance"}},
    "validation": {"cnn_test_bac": {"cnn_chance": "chance"}},
}
COLUMNS = ("value", "this run", "spread", "chance / baselines", "p-values")
SUMMARY = artifact_name(next(iter(STAGE_FILES)), "summary")  # the same file name in every stage's folder


@dataclass(frozen=True)
class StageResult:
    """One stage of a run as the page shows it: its summary, or why there is none."""

    stage: Stage
    state: str                            # summary | no summary | unfinished | not run | none written
    summary: dict[str, Any] | None = None


@dataclass
class _Row:
    key: str
    value: Any
    spread: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    p_values: dict[str, Any] = field(default_factory=dict)


def format_value(value: Any) -> str:
    """A summary value as the page prints it.

    Parameters
    ----------
    value
        A JSON value of a summary.

    Returns
    -------
    str
        Floats with 4 significant digits (``0.13333`` → ``0.1333``, ``21.0`` → ``21``, ``1234.5`` → ``1,234``),
        integers with thousands separators, ``None`` and NaN as ``—``, booleans as yes / no, lists joined by
        commas.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(item) for item in value) if value else "—"
    return str(value)


def read_results(layout: RunLayout, stages: Sequence[Stage] = STAGES) -> list[StageResult]:
    """Every stage's summary of a run, in run order.

    Parameters
    ----------
    layout
        The run (``runs/<dataset>/``).
    stages
        The stages to list (default: all of :data:`image2reg.stages.STAGES`).

    Returns
    -------
    list of StageResult
        ``summary`` with the summary's values; without one, ``no summary`` when the runbook recorded the
        stage as complete (a stage whose notebook writes none), ``unfinished`` when its folder or manifest
        is there (running, interrupted or failed), and ``not run`` otherwise (an optional stage not run is
        left out); ``none written`` for a stage that has no summary artifact at all (the data stage).
    """
    results = []
    for stage in stages:
        if "summary" not in STAGE_FILES.get(stage.name, {}):
            results.append(StageResult(stage, "none written"))
            continue
        path = layout.artifact(stage.name, "summary")
        if path.is_file():
            results.append(StageResult(stage, "summary", json.loads(path.read_text())))
            continue
        manifest = layout.manifest(stage)
        status = json.loads(manifest.read_text()).get("status") if manifest.is_file() else None
        state = ("no summary" if status == "complete" else "unfinished"
                 if status is not None or path.parent.is_dir() else "not run")
        if not (stage.optional and state == "not run"):  # an optional stage the run left out is not listed
            results.append(StageResult(stage, state))
    return results


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _companion(key: str, summary: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(model key, kind, label)`` when ``key`` is a baseline, p-value or spread of another key of ``summary``."""
    for suffix in SPREAD_SUFFIXES:
        if key.endswith(suffix):
            stem = key[: -len(suffix)]
            for target in (stem, f"{stem}_mean") if suffix in ("_sd", "_min", "_max") else (stem,):
                if target != key and _is_number(summary.get(target)):
                    return target, "spread", suffix[1:]
    parts = key.split("_")
    for start in range(len(parts)):
        for stop in range(start + 1, len(parts)):
            middle, target = "_".join(parts[start:stop]), "_".join(parts[:start] + parts[stop:])
            if not _is_number(summary.get(target)):
                continue
            if middle in BASELINES:
                return target, "baselines", BASELINES[middle]
            if middle.startswith("p_"):
                return target, "p_values", P_VALUES.get(middle, middle[2:].replace("_", " "))
    return None


def _rows(stage: str, summary: Mapping[str, Any]) -> tuple[list[_Row], dict[str, Mapping]]:
    """The table rows of a summary (companions folded into their model's row) and its nested tables."""
    named = {target: {companion: label for companion, label in companions.items() if companion in summary}
             for target, companions in COMPARISONS.get(stage, {}).items() if _is_number(summary.get(target))}
    consumed = {companion for companions in named.values() for companion in companions}
    placed: dict[str, tuple[str, str, str]] = {}
    for key, value in summary.items():
        if key not in consumed and (_is_number(value) or value is None):
            found = _companion(key, summary)
            if found is not None:
                placed[key] = found
    rows = {key: _Row(key, value) for key, value in summary.items()
            if key not in placed and key not in consumed and not isinstance(value, Mapping)}
    for target, companions in named.items():
        rows[target].baselines.update({label: summary[companion] for companion, label in companions.items()})
    for key, (target, kind, label) in placed.items():
        seen = {key}
        while target in placed and target not in seen:  # a companion of a companion joins the model's row
            seen.add(target)
            target = placed[target][0]
        if target in rows:
            getattr(rows[target], kind)[label] = summary[key]
        else:  # nothing to stand beside: its own row, in the summary's order
            rows[key] = _Row(key, summary[key])
    order = list(summary)
    rows = dict(sorted(rows.items(), key=lambda item: order.index(item[0])))
    tables = {key: value for key, value in summary.items() if isinstance(value, Mapping)}
    return list(rows.values()), tables


def _spread_text(spread: Mapping[str, Any]) -> str:
    parts = []
    if "sd" in spread:
        parts.append(f"± {format_value(spread['sd'])}")
    if "min" in spread and "max" in spread:
        parts.append(f"{format_value(spread['min'])} to {format_value(spread['max'])}")
    else:
        parts += [f"{end} {format_value(spread[end])}" for end in ("min", "max") if end in spread]
    if "ci_low" in spread or "ci_high" in spread:
        parts.append(f"95 % interval {format_value(spread.get('ci_low'))} to {format_value(spread.get('ci_high'))}")
    needed = [f"{format_value(spread[f'hits_needed_{kind}'])} ({kind})" for kind in ("random", "paired")
              if f"hits_needed_{kind}" in spread]
    if needed:
        parts.append("hits needed for p < 0.05: " + ", ".join(needed))
    return "; ".join(parts)


def _named_values(values: Mapping[str, Any]) -> str:
    return "; ".join(f"{label} {format_value(value)}" for label, value in values.items())


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def stage_section(result: StageResult) -> list[str]:
    """The Markdown lines of one stage: title, the fixed note, and its values (or why there are none).

    Parameters
    ----------
    result
        The stage and its summary (:func:`read_results`).

    Returns
    -------
    list of str
        ``## NN name``, the stage's line of :data:`STAGE_NOTES`, then a table whose rows are the summary's
        values (``value | this run | spread | chance / baselines | p-values``, the empty columns left out)
        followed by one small table per nested value; or one line saying the stage was not run.
    """
    stage = result.stage
    lines = [f"## {stage.number} {stage.name}", "", f"*{stage.title}.* {STAGE_NOTES.get(stage.name, '')}".rstrip(),
             ""]
    if result.state != "summary":
        lines += [{"not run": "Not run: no stage folder in this run.",
                   "no summary": "Run to the end, but its notebook writes no summary.",
                   "unfinished": "Started but not finished (running, interrupted or failed): no summary yet.",
                   "none written": "This stage writes no summary."}[result.state], ""]
        return lines
    rows, tables = _rows(stage.name, result.summary)
    cells = [[f"`{row.key}`", format_value(row.value), _spread_text(row.spread), _named_values(row.baselines),
              _named_values(row.p_values)] for row in rows]
    shown = [i for i in range(len(COLUMNS)) if i < 2 or any(cell[i] for cell in cells)]
    if cells:
        lines += _markdown_table([COLUMNS[i] for i in shown], [[cell[i] for i in shown] for cell in cells]) + [""]
    for key, table in tables.items():
        lines += [f"`{key}`:", ""]
        if all(isinstance(value, Mapping) for value in table.values()):
            columns = list(dict.fromkeys(column for value in table.values() for column in value))
            lines += _markdown_table(["", *columns], [[str(name), *(format_value(value.get(column))
                                                                     for column in columns)]
                                                      for name, value in table.items()])
        else:
            lines += _markdown_table(["", "value"], [[str(name), format_value(value)] for name, value in table.items()])
        lines.append("")
    return lines


def render_results(dataset: str, results: Sequence[StageResult], *, command: str, runs_label: str,
                   params: str | None = None, commit: str | None = None, finished: str | None = None) -> str:
    """The Markdown page of a run's results.

    Parameters
    ----------
    dataset
        The run's dataset.
    results
        Its stages (:func:`read_results`).
    command
        The command that regenerates the page, named in its header.
    runs_label
        The run's folder as the header names it (``runs/demo``).
    params, commit, finished
        Optional header lines: the params file, the git commit the page was generated at, and when the
        run's last stage finished.

    Returns
    -------
    str
        The page, ending with a newline.
    """
    lines = [f"# Results: {dataset}", "",
             f"Generated by `{command}` from the `{SUMMARY}` of every stage in `{runs_label}/`; "
             "do not edit by hand, regenerate it.", ""]
    facts = [f"dataset: `{dataset}`" + (f", params `{params}`" if params else "")]
    if finished:
        facts.append(f"run: last stage finished {finished} (the runbook's manifests)")
    if commit:
        facts.append(f"generated at commit `{commit}`")
    lines += [f"- {fact}" for fact in facts] + [""]
    run = [result for result in results if result.state == "summary"]
    lines += [f"Stages with a summary: {', '.join(r.stage.id for r in run) or 'none'}. "
              "In each table a value's chance level, baselines and p-values stand on its row.", ""]
    for result in results:
        lines += stage_section(result)
    return "\n".join(lines).rstrip("\n") + "\n"


def _last_finished(layout: RunLayout, stages: Sequence[Stage]) -> str | None:
    times = []
    for stage in stages:
        path = layout.manifest(stage)
        if path.is_file():
            manifest = json.loads(path.read_text())
            if manifest.get("status") == "complete" and manifest.get("finished_at"):
                times.append(manifest["finished_at"])
    return max(times) if times else None


def _git_commit(root: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def write_results(dataset: str, runs_dir: str | Path | None = None, out: str | Path | None = None, *,
                  root: str | Path | None = None, commit: bool = True) -> Path:
    """Render a run's results and write them (atomically).

    Parameters
    ----------
    dataset
        The run's dataset.
    runs_dir
        Its runs folder (default: the project's ``runs/``).
    out
        The page (default: the project's ``docs/results.md``).
    root
        The project (default: found from the working directory, if any); needed unless ``runs_dir`` and
        ``out`` are both given. The header names its params file and git commit.
    commit
        Name the project's git commit in the header (when git finds one).

    Returns
    -------
    Path
        The page written.

    Notes
    -----
    The header names the runs folder relative to the project, or by its last part when it lies outside
    (an absolute path of one machine means nothing in a committed page), and the command that
    regenerates the page adds ``--runs-dir`` only when that folder is not ``runs``.
    """
    if root is None:
        try:
            root = find_project_root()
        except FileNotFoundError:
            if runs_dir is None or out is None:
                raise
    root = Path(root).resolve() if root is not None else None
    runs = Path(runs_dir) if runs_dir is not None else root / "runs"
    out = Path(out) if out is not None else root / "docs" / "results.md"
    layout = RunLayout(dataset, runs_dir=runs)
    if not layout.root.is_dir():
        raise FileNotFoundError(f"no run of '{dataset}' in {runs}: run `python runbook.py --dataset {dataset}` first")
    results = read_results(layout)
    if root is not None and runs.resolve().is_relative_to(root):
        label = runs.resolve().relative_to(root).as_posix()
    else:
        label = runs.resolve().name
    command = f"python -m image2reg results --dataset {dataset}" + ("" if label == "runs" else f" --runs-dir {label}")
    params = root / "params" / f"{dataset}.yml" if root is not None else None
    text = render_results(
        dataset, results, command=command, runs_label=f"{label}/{dataset}",
        params=params.relative_to(root).as_posix() if params is not None and params.is_file() else None,
        commit=_git_commit(root) if commit and root is not None else None,
        finished=_last_finished(layout, STAGES))
    write_text_atomic(out, text)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m image2reg results``: write a run's results page; 0 on success, 2 when there is no such run."""
    parser = argparse.ArgumentParser(prog="python -m image2reg results",
                                     description=f"Write the results page of a run (docs/results.md) from the "
                                                 f"{SUMMARY} of its stages.")
    parser.add_argument("--dataset", default="demo", help="the run's dataset (default: demo)")
    parser.add_argument("--runs-dir", help="runs folder (default: the project's runs/)")
    parser.add_argument("--out", help="the page to write (default: the project's docs/results.md)")
    args = parser.parse_args(argv)
    try:
        out = write_results(args.dataset, args.runs_dir, args.out)
    except (FileNotFoundError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
