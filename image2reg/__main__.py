"""``python -m image2reg <command>``: ``predict`` (rank genes for new images), ``results`` (write a run's results
page) and ``runbook`` (run the stages, as ``python runbook.py``)."""

from __future__ import annotations

import sys

COMMANDS = {
    "predict": "rank the interactome's genes for the images of an unseen condition",
    "results": "write a run's results page (docs/results.md) from its stages' summaries",
    "runbook": "run the stage notebooks of a params file (as python runbook.py)",
}


def usage() -> str:
    """The top-level help: each command with what it does."""
    lines = [f"usage: python -m image2reg {{{','.join(COMMANDS)}}} ...", "", "commands:"]
    lines += [f"  {name:9s} {what}" for name, what in COMMANDS.items()]
    lines += ["", "python -m image2reg <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] == "predict":
        from image2reg.predict import main as predict
        return predict(argv[1:])
    if argv[0] == "results":
        from image2reg.results import main as results
        return results(argv[1:])
    from image2reg.runbook import main as runbook
    return runbook(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
