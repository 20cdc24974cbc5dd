"""The rule registry is the one declaration of every rule: reasons, funnel, CLI, config and README come from it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from aligndata.cli import build_parser, main
from aligndata.filters import reasons, registry
from aligndata.filters.registry import RULES, Rule, row_rules, rule_options
from aligndata.pipeline import report
from aligndata.pipeline.candidates import prepare_row
from aligndata.pipeline.config import CURATE_OPTIONS, CurateConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def test_registry_invariants_hold():
    registry.check()


# The architecture's reason order; a new rule may sit anywhere between these, never reorder them.
ARCHITECTURE_ORDER = (
    reasons.INVALID_ROW, reasons.DUPLICATE_PAIR, reasons.TEXT_TOO_SHORT, reasons.TEXT_TOO_LONG,
    reasons.TEXT_BOILERPLATE, reasons.TEXT_RARE_TOKEN, reasons.TEXT_SHARED_BY_TOO_MANY_IMAGES,
    reasons.IMAGE_TOO_MANY_TEXTS, reasons.ROBOTS_DISALLOWED, reasons.BLOCKED_ADDRESS, reasons.DOWNLOAD_FAILED,
    reasons.DECODE_FAILED, reasons.IMAGE_TOO_SMALL, reasons.ASPECT_RATIO_TOO_LARGE, reasons.EVAL_SET_DUPLICATE,
    reasons.NSFW,
)


def test_reason_order_keeps_the_architectures_precedence():
    assert [r for r in registry.REASONS if r in ARCHITECTURE_ORDER] == list(ARCHITECTURE_ORDER)
    assert registry.REASONS[0] == reasons.INVALID_ROW


def test_readme_rule_table_is_the_registrys():
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- rules-table:start -->\n(.*?)<!-- rules-table:end -->", text, re.S)
    assert match, "README lost its rules-table markers"
    assert match.group(1) == registry.markdown_table(), "README's rule table is stale: run `make rules-table`"


def test_every_rule_option_is_a_curate_option_and_a_config_field():
    curate = build_parser()._subparsers._group_actions[0].choices["curate"]
    flags = {flag for action in curate._actions for flag in action.option_strings}
    fields = {f.name for f in dataclasses.fields(CurateConfig)}
    for option in registry.OPTIONS:
        assert option.flag in flags
        assert option.dest in fields
        assert getattr(CurateConfig(inputs=("x",), output="o"), option.dest) == option.default
    assert len({o.dest for o in CURATE_OPTIONS}) == len(CURATE_OPTIONS), "two options fill one field"


def test_report_funnel_stages_come_from_the_registry():
    by_reason = {reason: i + 1 for i, reason in enumerate(registry.REASONS)}
    funnel = report.funnel(1000, by_reason)
    assert [s["stage"] for s in funnel] == ["input_rows"] + [stage for stage, _ in registry.FUNNEL]
    assert funnel[-1]["rows"] == 1000 - sum(by_reason.values())
    assert {r for _, rs in registry.FUNNEL for r in rs} == set(registry.REASONS)


def _raw(text: str, url: str = "https://example.com/a.jpg") -> dict:
    return {"url": url, "text": text, "src": 0, "row": 0}


def test_row_stage_applies_the_registered_row_rules_in_order():
    rules = row_rules(rule_options())
    order = [reason for reason, _ in rules]
    on_by_default = [r.reason for r in RULES if r.stage == registry.ROW and r.decide is not None
                     and (r.enabled_by is None or registry.defaults()[r.enabled_by])]
    assert order == on_by_default and reasons.TEXT_LANGUAGE not in order  # --languages is off by default
    assert reasons.TEXT_TOO_FEW_CHARACTERS not in order  # --min-chars too
    assert order.index(reasons.TEXT_TOO_SHORT) < order.index(reasons.TEXT_TOO_LONG) < order.index(
        reasons.TEXT_BOILERPLATE)
    cand, _ = prepare_row(_raw("two words"), rules)
    assert (cand["reason"], cand["detail"]) == (reasons.TEXT_TOO_SHORT, "2 words")
    cand, _ = prepare_row(_raw("HD wallpaper 1920x1080"), rules)  # 3 words, but only a resolution
    assert cand["reason"] == reasons.TEXT_BOILERPLATE
    cand, _ = prepare_row(_raw("HD wallpaper 1920x1080"), row_rules(rule_options(boilerplate=False)))
    assert cand["reason"] is None  # --no-boilerplate turns the rule off


def test_a_new_row_rule_is_one_registration(monkeypatch):
    """What adding a rule takes: a function and a Rule; the row stage then applies it with its option."""
    def all_caps(opts, caption, words):
        return "all caps" if opts.all_caps and caption.isupper() else None

    from aligndata.filters.options import Option

    new = Rule("text_all_caps", registry.ROW, "text_rules", registry.CAPTION, "captions in capitals",
               options=(Option("--no-all-caps", True, "off", action="store_false"),), decide=all_caps,
               decided_in="test")
    monkeypatch.setattr(registry, "RULES", RULES + (new,))
    opts = dataclasses.make_dataclass("Opts", [("all_caps", bool, True)])()
    opts.__dict__.update(registry.defaults())
    cand, _ = prepare_row(_raw("A RED CAR PARKED OUTSIDE"), row_rules(opts))
    assert (cand["reason"], cand["detail"]) == ("text_all_caps", "all caps")
    assert new.options[0].dest == "all_caps"


def test_rule_options_refuses_unknown_names():
    with pytest.raises(TypeError, match="unknown rule options"):
        rule_options(min_wrods=2)


def test_rules_command_prints_every_rule(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for rule in RULES:
        assert rule.reason in out
    assert '"alt-texts that are shared by more than 10 images"' in out
    assert main(["rules", "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)
    assert [r["reason"] for r in rules] == list(registry.REASONS)
    assert rules[2]["options"][0] == {"flag": "--min-words", "dest": "min_words", "default": 3,
                                      "help": "keep captions with >= this many words"}
    assert main(["rules", "--markdown"]) == 0
    assert capsys.readouterr().out == registry.markdown_table()


def test_rules_command_rewrites_a_stale_readme_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- rules-table:start -->\n| old |\n<!-- rules-table:end -->\nrest\n")
    assert main(["rules", "--write-readme", str(readme)]) == 0
    assert readme.read_text() == ("intro\n<!-- rules-table:start -->\n" + registry.markdown_table()
                                  + "<!-- rules-table:end -->\nrest\n")


def test_fetch_options_reach_curate_and_extract_configs():
    """One declaration of the fetch options: both commands offer every one, and every value reaches the config."""
    from aligndata.commands.curate import curate_config
    from aligndata.commands.extract import extract_config
    from aligndata.fetch.options import FETCH_OPTIONS

    given = ["--timeout", "3", "--total-timeout", "9", "--retries", "1", "--fetch-threads", "4", "--max-per-host",
             "2", "--host-rate", "5", "--respect-robots-txt", "--robots-timeout", "2", "--allow-private-networks",
             "--user-agent", "bot/1", "--contact", "ops@example.com"]
    assert sorted(given[i] for i in range(len(given)) if given[i].startswith("--")) == sorted(
        o.flag for o in FETCH_OPTIONS)
    parser = build_parser()
    curate = curate_config(parser.parse_args(["curate", "--input", "x", "--output", "o", *given]))
    extract = extract_config(parser.parse_args(["extract", "--input", "x", "--output", "p.parquet", *given]))
    expected = {"timeout": 3.0, "total_timeout": 9.0, "retries": 1, "fetch_threads": 4, "max_per_host": 2,
                "host_rate": 5.0, "respect_robots_txt": True, "robots_timeout": 2.0, "allow_private_networks": True,
                "user_agent": "bot/1", "contact": "ops@example.com"}
    for cfg in (curate, extract):
        assert {k: getattr(cfg, k) for k in expected} == expected
        fetch = cfg.fetch_config() if hasattr(cfg, "fetch_config") else None
        if fetch is not None:
            assert (fetch.max_per_host, fetch.host_min_interval, fetch.respect_robots_txt) == (2, 0.2, True)
