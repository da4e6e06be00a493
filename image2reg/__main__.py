"""``python -m image2reg <command>``: ``predict`` (rank genes for new images) and ``runbook``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"predict", "runbook"}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m image2reg {{{','.join(sorted(commands))}}} ...", file=sys.stderr)
        return 2
    if argv[0] == "predict":
        from image2reg.predict import main as predict
        return predict(argv[1:])
    from image2reg.runbook import main as runbook
    return runbook(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
