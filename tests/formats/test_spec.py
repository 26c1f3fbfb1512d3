"""Format specs: every form parses to the format `get_format` gives; bad specs say why."""

import pytest

from effjax.formats import get_format, parse_format_spec


@pytest.mark.parametrize("spec, expected", [
    (None, None),
    ("mxfp4", get_format("mxfp4")),
    ("hif8", get_format("hif8")),
    ("int4:128", get_format("int4", granularity="group", group_size=128)),
    ("int4:16", get_format("int4", granularity="group", group_size=16)),
    ("fp8_e4m3:channel", get_format("fp8_e4m3", granularity="channel")),
    ("fp8_e5m2:tensor", get_format("fp8_e5m2", granularity="tensor")),
    ("mxfp4@rceil", get_format("mxfp4", scale_mode="rceil")),
    ("mxfp8_e4m3@even", get_format("mxfp8_e4m3", scale_mode="even")),
    ("int2:32@asym", get_format("int2", granularity="group", group_size=32, symmetric=False)),
    ("int8:channel@asym", get_format("int8", granularity="channel", symmetric=False)),
])
def test_each_spec_form(spec, expected):
    assert parse_format_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("int4:rows", r"spec 'int4:rows': after ':' expected a group size, 'tensor' or 'channel', "
                  r"got 'rows'"),
    ("int4:", r"spec 'int4:': after ':' expected a group size, 'tensor' or 'channel', got ''"),
    ("mxfp4@", r"spec 'mxfp4@': after '@' expected an MX scale mode or 'asym', got ''"),
])
def test_a_malformed_spec_names_the_argument_what_was_expected_and_what_was_given(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_format_spec(spec)


def test_what_the_format_refuses_is_refused():
    with pytest.raises(ValueError, match="group_size for int4 must be one of"):
        parse_format_spec("int4:48")
    with pytest.raises(ValueError, match="scale_mode must be one of"):
        parse_format_spec("mxfp4@nearest")
    with pytest.raises(ValueError, match="unknown format 'int5'"):
        parse_format_spec("int5:32")


def test_a_spec_must_be_a_string():
    with pytest.raises(TypeError, match=r"spec must be a format spec string .* got int 4"):
        parse_format_spec(4)
