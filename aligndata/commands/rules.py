"""``aligndata rules [--json | --markdown]``: the rule registry, as text, JSON or README's markdown table."""

from __future__ import annotations

import json
import re
import sys

_TABLE_RE = re.compile(r"(<!-- rules-table:start -->\n)(.*?)(<!-- rules-table:end -->)", re.S)


def write_readme_table(path: str) -> bool:
    """Replace the table between README's rules-table markers with the registry's; True when it changed."""
    from aligndata.filters import registry

    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not _TABLE_RE.search(text):
        raise SystemExit(f"aligndata rules: no <!-- rules-table:start/end --> markers in {path}")
    new = _TABLE_RE.sub(lambda m: m.group(1) + registry.markdown_table() + m.group(3), text)
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text


def cmd_rules(args, beam_args) -> int:
    from aligndata.filters import registry

    if args.preset:
        from aligndata.filters import presets
        from aligndata.pipeline.config import CURATE_OPTIONS

        # a switch is named by what it turns on (--boilerplate off), not by its --no- form
        flags = {o.dest: f"--{o.dest.replace('_', '-')}" if o.action == "store_false" else o.flag
                 for o in CURATE_OPTIONS}
        defaults = {o.dest: o.default for o in CURATE_OPTIONS}
        sys.stdout.write(presets.describe(presets.get(args.preset), flags, defaults))
    elif args.write_readme:
        changed = write_readme_table(args.write_readme)
        print(f"{args.write_readme}: rule table {'updated' if changed else 'already current'}", file=sys.stderr)
    elif args.json:
        json.dump([rule.to_json() for rule in registry.RULES], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif args.markdown:
        sys.stdout.write(registry.markdown_table())
    else:
        sys.stdout.write(registry.text_table())
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("rules", help="every rule: the paper's wording, option, default, reason code, "
                                                 "stage (in the order that decides a row's reason)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable")
    form.add_argument("--markdown", action="store_true", help="README's rule table")
    form.add_argument("--write-readme", metavar="README.md", help="rewrite the table between its rules-table markers")
    from aligndata.filters.presets import PRESETS

    form.add_argument("--preset", choices=list(PRESETS), help="what a published recipe sets (curate --preset)")
    parser.set_defaults(func=cmd_rules)
