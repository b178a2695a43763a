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


@given(st.lists(st.integers(-3, 40), max_size=20))
def test_decode_drops_the_blank_and_out_of_range_indices(indices):
    charset = Charset.parse("0-9A-F")
    kept = [i for i in indices if 0 < i <= len(charset.symbols)]
    assert charset.decode(indices) == charset.decode(kept)
    assert len(charset.decode(indices)) == len(kept)


@given(st.text(alphabet="0123456789ABCDEF", max_size=8), st.sampled_from("XYZ-_é "))
def test_a_symbol_outside_the_charset_is_refused_and_named(text, outsider):
    charset = Charset.parse("0-9A-F")
    assert charset.unknown(text + outsider) == outsider
    with pytest.raises(CharsetError):
        charset.encode(text + outsider)


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=6),
                min_size=1, max_size=8))
def test_charset_from_labels_encodes_every_label(labels):
    charset = Charset.from_labels(labels)
    assert len(set(charset.symbols)) == len(charset.symbols)
    for label in labels:
        assert charset.decode(charset.encode(label)) == label


@given(st.text(alphabet="abcdefXYZ019", max_size=15))
def test_ranges_without_dashes_keep_each_symbol_once_in_order(spec):
    assert expand_ranges(spec) == "".join(dict.fromkeys(spec))


def test_batch_encoding_pads_with_the_blank_and_cuts_at_the_length():
    charset = Charset.parse("a-c", case_insensitive=True)
    targets = charset.encode_batch(["ab", "cab", "bcab"], 3)
    assert targets.dtype.name == "int32" and targets.tolist() == [[1, 2, BLANK], [3, 1, 2], [2, 3, 1]]
    assert charset.encode_batch([], 4).shape == (0, 4)
    with pytest.raises(CharsetError, match="'ax'"):
        charset.encode_batch(["ab", "ax"], 3)


def test_index_lookup_is_the_encoding_of_one_symbol():
    charset = Charset.parse("A-C", case_insensitive=True)
    assert [charset.index_of(ch) for ch in "ABC"] == charset.encode("ABC")
    assert charset.index_of("Z") is None and charset.index_of("a") is None  # as written: no folding
