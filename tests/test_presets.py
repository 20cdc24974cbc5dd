"""Published recipes as presets (`curate --preset`, `aligndata rules --preset`), and the rules they need:
--min-chars, --min-image-bytes, and 0 = off for the frequency rules."""

from __future__ import annotations

import pytest
from helpers import encode, read_report, write_pairs
from httpserver import make_image_bytes
from PIL import Image

from aligndata.cli import build_parser, main
from aligndata.commands.curate import curate_config
from aligndata.filters import presets, registry
from aligndata.filters.frequency import shared_text_reason, too_many_texts_reason
from aligndata.images.process import ImageConfig, process_image
from aligndata.inspect.ledger import read_ledger
from aligndata.pipeline.config import CURATE_OPTIONS


def config_for(*argv):
    args, _ = build_parser().parse_known_args(["curate", "--input", "x.parquet", "--output", "out", *argv])
    return curate_config(args)


def test_every_preset_sets_known_options_to_valid_values():
    dests = {o.dest: o for o in CURATE_OPTIONS}
    for preset in presets.PRESETS.values():
        assert preset.source and preset.title
        for setting in preset.settings:
            assert setting.dest in dests, (preset.name, setting.dest)
            assert setting.why
            option = dests[setting.dest]
            if option.type is not None and not isinstance(setting.value, bool):
                typed = ",".join(setting.value) if isinstance(setting.value, tuple) else str(setting.value)
                assert option.type(typed) == setting.value, (preset.name, setting.dest)
        cfg = config_for("--preset", preset.name)  # the config accepts them (ImageConfig checks its own)
        ImageConfig.from_options(cfg)
        assert cfg.preset == preset.name


def test_a_preset_sets_its_values_and_leaves_the_rest_at_the_defaults():
    cfg = config_for("--preset", "datacomp-basic")
    assert (cfg.min_words, cfg.min_chars, cfg.min_side) == (3, 6, 199)
    assert cfg.max_aspect_ratio > 3.0 and cfg.max_images_per_text == 0 and cfg.boilerplate is False
    assert cfg.max_download_bytes == config_for().max_download_bytes  # not a rule of the recipe
    plain = config_for()
    assert (plain.min_chars, plain.min_side, plain.max_images_per_text, plain.preset) == (0, 200, 10, None)


def test_options_given_on_the_command_line_win_even_when_they_equal_the_default():
    cfg = config_for("--preset", "laion", "--min-side", "200", "--max-words", "30", "--boilerplate")
    assert (cfg.min_side, cfg.max_words, cfg.boilerplate) == (200, 30, True)
    assert cfg.min_chars == 5  # the rest of the preset still applies
    assert config_for("--preset", "coyo", "--no-boilerplate").boilerplate is False


def test_the_aspect_bound_is_exactly_inclusive_for_integer_sides():
    bound = presets.ASPECT_AT_MOST_3
    for short in (1, 7, 200, 5_461, 99_999):
        assert not 3 * short / short >= bound  # exactly 3.0 is kept
        assert (3 * short + 1) / short >= bound  # the next ratio up is not


def test_rules_preset_shows_every_setting_its_source_and_what_comes_next(capsys):
    assert main(["rules", "--preset", "laion"]) == 0
    out = capsys.readouterr().out
    assert presets.LAION_PAPER in out
    for flag in ("--min-chars", "--min-image-bytes", "--vocab-size", "--boilerplate"):
        assert flag in out
    assert "aligndata subset OUT --output OUT_clip028 --min-score 0.28" in out
    assert "--no-boilerplate" not in out  # a switch is shown by what it turns on


def test_an_unknown_preset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["curate", "--input", "x", "--output", "y", "--preset", "laion-9b"])
    assert exc.value.code == 2
    assert "invalid choice: 'laion-9b'" in capsys.readouterr().err


def test_zero_turns_the_frequency_rules_off():
    assert shared_text_reason(10**6, 0) is None and too_many_texts_reason(10**6, 0) is None
    assert shared_text_reason(11, 10) and too_many_texts_reason(1001, 1000)
    assert shared_text_reason(10, 10) is None


def test_min_chars_counts_the_normalized_caption():
    decide = dict(registry.row_rules(registry.rule_options(min_chars=6)))["text_too_few_characters"]
    assert decide("a cat", ["a", "cat"]) == "5 characters"
    assert decide("a cats", ["a", "cats"]) is None
    assert "text_too_few_characters" not in dict(registry.row_rules(registry.rule_options()))  # off by default


def test_min_image_bytes_is_judged_before_decoding():
    small = encode(Image.new("RGB", (300, 300), (200, 30, 30)), "JPEG", quality=50)
    outcome = process_image(small, ImageConfig(min_image_bytes=len(small) + 1))
    assert (outcome.reason, outcome.detail) == ("image_file_too_small", f"{len(small)} bytes")
    assert process_image(small, ImageConfig(min_image_bytes=len(small))).reason is None
    garbage = b"\xff\xd8 not a jpeg"  # too small wins over undecodable: nothing is decoded
    assert process_image(garbage, ImageConfig(min_image_bytes=100)).reason == "image_file_too_small"


def test_align_preset_is_the_defaults_on_english():
    cfg, plain = config_for("--preset", "align"), config_for()
    assert cfg.languages == ("en",) and plain.languages == ()
    assert {k: v for k, v in vars(cfg).items() if k not in ("languages", "preset")} == \
        {k: v for k, v in vars(plain).items() if k not in ("languages", "preset")}


@pytest.mark.e2e
def test_datacomp_basic_keeps_its_boundaries_exactly_where_align_drops_them(tmp_path, http_server):
    def serve(path, width, height, seed):
        http_server.add(path, make_image_bytes(width, height, seed=seed))
        return http_server.url(path)

    square = serve("/presets/200x200.jpg", 200, 200, 1)  # ALIGN: shorter side must be > 200
    wide = serve("/presets/600x200.jpg", 600, 201, 2)  # ratio 2.985: both keep it
    exact = serve("/presets/630x210.jpg", 630, 210, 3)  # ratio exactly 3.0: ALIGN drops, DataComp keeps
    over = serve("/presets/631x210.jpg", 631, 210, 4)  # ratio > 3: both drop
    rows = [
        (square, "a small square photo of a red barn", None, "image_too_small"),
        (wide, "a wide photo of the harbour at dawn", None, None),
        (exact, "a panorama of the mountains in spring", None, "aspect_ratio_too_large"),
        (over, "a panorama of the city skyline at night", "aspect_ratio_too_large", "aspect_ratio_too_large"),
        (serve("/presets/abc.jpg", 400, 300, 5), "a b c", "text_too_few_characters", None),  # 3 words, 5 chars
    ]
    pairs = write_pairs(tmp_path / "pairs.parquet", [(url, caption) for url, caption, _, _ in rows])
    outcomes = {}
    for name, extra in (("datacomp", ["--preset", "datacomp-basic"]), ("align", [])):
        out = tmp_path / name
        assert main(["curate", "--input", pairs, "--output", str(out), "--allow-private-networks", "--quiet",
                     *extra]) == 0
        ledger = {r["source_row"]: r["reason"] for r in read_ledger(out, "rejected").to_pylist()}
        outcomes[name] = [ledger.get(i) for i in range(len(rows))]
        assert read_report(out)["accounting_ok"]
    assert outcomes["datacomp"] == [expected for _, _, expected, _ in rows]
    assert outcomes["align"] == [expected for _, _, _, expected in rows]
