"""The options table: one definition per option, read by the engine, README and adapters."""

from __future__ import annotations

import importlib.util
from dataclasses import fields
from datetime import date
from pathlib import Path

import pytest
from shapely.geometry import box

from clearsky.core import options as opts
from clearsky.core.aoi import Aoi
from clearsky.core.errors import InvalidParameterError
from clearsky.core.params import MosaicParams, SearchParams

ROOT = Path(__file__).resolve().parents[2]
INTERNAL = {"aoi", "max_workers", "output", "report_csv", "write_report", "overwrite",
            "scene_ids", "block_size", "gui", "catalog_headers", "proxy", "no_proxy"}


def test_every_user_facing_field_has_exactly_one_option_and_its_default():
    user_fields = [f for f in fields(MosaicParams) if f.name not in INTERNAL]
    assert sorted(f.name for f in user_fields) == sorted(opts.BY_FIELD)
    for f in user_fields:
        if f.name not in ("start", "end"):  # required: no default in the engine
            assert f.default == opts.default(f.name), f.name
    assert len({o.key for o in opts.OPTIONS}) == len(opts.OPTIONS)
    assert all(o.key == o.key.upper() and o.help.endswith(".") for o in opts.OPTIONS)


def aoi() -> Aoi:
    return Aoi(box(13.5, 52.3, 13.52, 52.32))


@pytest.mark.parametrize("field,value,words", [
    ("max_scene_cloud", 101.0, "cloud cover (%) (MAX_SCENE_CLOUD) must be from 0 to 100"),
    ("max_aoi_cloud", -1.0, "(MAX_AOI_CLOUD) must be from 0 to 100, not -1.0"),
    ("dilation", 51, "(DILATION) must be from 0 to 50, not 51"),
    ("percentile", 150.0, "(PERCENTILE) must be from 0 to 100"),
    ("resolution", 0.0, "(RESOLUTION) must be from 0.01 to 100000"),
    ("invalid_scl", frozenset({12}), "SCL classes run from 0 to 11; [12] is not one"),
    ("method", "mean", "must be one of best, median, percentile"),
])
def test_validation_reads_the_ranges_of_the_table(tmp_path, field, value, words):
    params = MosaicParams(aoi=aoi(), start=date(2024, 6, 1), end=date(2024, 6, 30),
                          output=tmp_path / "m.tif", **{field: value})
    with pytest.raises(InvalidParameterError) as info:
        params.validate()
    assert words in str(info.value)


def test_text_round_trips_for_every_option():
    for o in opts.OPTIONS:
        if o.default is None or o.kind in (opts.NUMBER, opts.INTEGER, opts.BOOL, opts.TEXT):
            continue
        assert o.parse(o.text(o.default)) == o.default, o.key
    assert opts.parse_bands(" Red ;NIR") == ("red", "nir")
    assert opts.parse_classes("0 1,3") == frozenset({0, 1, 3})
    with pytest.raises(InvalidParameterError, match="listed twice"):
        opts.parse_bands("red,red")


def test_search_only_keeps_the_mask_rule():
    full = MosaicParams(aoi=aoi(), start=date(2024, 6, 1), end=date(2024, 6, 30), dilation=0,
                        invalid_scl=frozenset({0, 9}))
    search = full.search_only()
    assert type(search) is SearchParams
    assert (search.dilation, search.invalid_scl) == (0, frozenset({0, 9}))


def test_readme_parameter_table_is_the_options_table():
    spec = importlib.util.spec_from_file_location("options_table",
                                                  ROOT / "scripts" / "options_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module.rendered() in readme, "run: .venv/bin/python scripts/options_table.py"
    from clearsky.provider.parameters import MOSAIC_FIELDS

    assert module.mosaic_fields() == MOSAIC_FIELDS
