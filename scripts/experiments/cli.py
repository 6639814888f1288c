"""The flags every experiment shares, and their checks (one line on a mistake)."""
from __future__ import annotations

from evaluation.cli import OneLineParser, fail
from scripts.experiments.runner import owned_flag


def add_common_args(p: OneLineParser, out: str, max_prompts: int, max_prompts_help: str | None = None) -> None:
    p.add_argument("--max-prompts", type=int, default=max_prompts, help=max_prompts_help)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--out", default=out)
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--window", type=int, default=200, help="blocks per rolling window (plot and table)")
    p.add_argument("--overwrite", action="store_true", help="rerun variants that already finished")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from OUT")


def names_list(text: str, flag: str, choices=None) -> list[str]:
    """A comma-separated list (duplicates dropped, order kept), each in ``choices`` when given."""
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [s for s in names if choices is not None and s not in choices]
    if bad or not names:
        fail(f"{flag}: unknown {', '.join(bad) or '(none given)'}; pick from {','.join(choices or ())}"
             if choices is not None else f"{flag}: give at least one value")
    return names


def check_common(args, extra: list[str], owned, tool: str, needs: tuple[str, ...]) -> None:
    """--window, the extra flags (none the tool sets itself) and, unless --report-only, the ``needs`` flags
    (attribute names) and the lengths."""
    if args.window < 1:
        fail("--window must be >= 1")
    flag = owned_flag(extra, owned)
    if flag:
        fail(f"{flag} is set by {tool} for every run: leave it out")
    if args.report_only:
        return
    missing = [n for n in needs if not getattr(args, n)]
    if missing:
        names = " and ".join("--" + n.replace("_", "-") for n in needs)
        fail(f"{names} {'are' if len(needs) > 1 else 'is'} required (or pass --report-only to rebuild the report)")
    if args.max_prompts < 1 or args.max_new_tokens < 1:
        fail("--max-prompts and --max-new-tokens must be >= 1")
