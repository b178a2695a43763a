import pytest
from hypothesis import given
from hypothesis import strategies as st

from captchalab.charset import BLANK, Charset, expand_ranges
from captchalab.errors import CharsetError


def test_ranges_expand_in_order():
    assert expand_ranges("0-9A-Z") == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert expand_ranges("a-c-") == "abc-"


def test_backwards_range_is_an_error():
    with pytest.raises(CharsetError, match="backwards"):
        expand_ranges("Z-A")


def test_blank_is_index_zero_and_never_a_symbol():
    charset = Charset.parse("AB")
    assert charset.encode("BA") == [2, 1]
    assert BLANK not in charset.encode("AB")
    assert charset.decode([0, 2, 0, 1]) == "BA"
    assert charset.num_classes == 3


def test_case_folding():
    charset = Charset.parse("a-c", case_insensitive=True)
    assert charset.symbols == "ABC"
    assert charset.decode(charset.encode("abC")) == "ABC"


def test_unknown_character_is_named():
    with pytest.raises(CharsetError, match="'x'"):
        Charset.parse("0-9").encode("12x")


@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=12))
def test_encode_decode_round_trip(text):
    charset = Charset.parse("0-9A-Z")
    assert charset.decode(charset.encode(text)) == text


@given(st.text(alphabet="abcXYZ", max_size=12))
def test_case_insensitive_round_trip_is_upper(text):
    charset = Charset.parse("abcxyz", case_insensitive=True)
    assert charset.decode(charset.encode(text)) == text.upper()


def test_config_round_trip():
    charset = Charset.parse("0-9a-z", case_insensitive=False)
    assert Charset.from_dict(charset.to_dict()) == charset
