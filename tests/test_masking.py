"""The stream masker of ``run``: any chunking masks as the whole does."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from jinja_apsecrets.masking import CONCEALED, StreamMasker, mask, maskable

C = CONCEALED


def oracle(data: bytes, values: list[str]) -> bytes:
    """The rule, as a regular expression: values alternated longest first."""
    forms = maskable(values)
    if not forms:
        return data
    pattern = re.compile(b"|".join(re.escape(v) for v in forms))
    return pattern.sub(lambda _: C, data)


def stream(values: list[str], chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    """All output of a masker fed ``chunks``, and what each feed returned."""
    masker = StreamMasker(values)
    parts = [masker.feed(c) for c in chunks]
    return b"".join([*parts, masker.flush()]), parts


class TestMask:
    def test_replaces_every_occurrence(self) -> None:
        assert mask(b"a=hunter2 b=hunter2\n", ["hunter2"]) == b"a=" + C + b" b=" + C + b"\n"

    def test_short_values_are_not_masked(self) -> None:
        assert mask(b"no 1 yes", ["no", "1", "yes"]) == b"no 1 " + C
        assert maskable(["ab", "abc", "abc"]) == [b"abc"]

    def test_longest_value_wins_at_a_position(self) -> None:
        assert mask(b"xabcdefx", ["abc", "abcdef"]) == b"x" + C + b"x"

    def test_utf8_values(self) -> None:
        assert mask("pw=pässwörd\n".encode(), ["pässwörd"]) == b"pw=" + C + b"\n"

    def test_trimmed_values_and_lines_of_multiline_values(self) -> None:
        pem = "-----BEGIN KEY-----\nMIIBsecretbody\n-----END KEY-----\n"
        out = mask(b"key: MIIBsecretbody\nraw: s3cret.\n", [pem, "s3cret\n"])
        assert out == b"key: " + C + b"\nraw: " + C + b".\n"
        assert mask(pem.encode(), [pem]) == C
        assert maskable(["ab\ncd"]) == [b"ab\ncd"]  # lines shorter than 3 are not masked

    def test_no_values_passes_through(self) -> None:
        assert mask(b"anything", []) == b"anything"


class TestStream:
    def test_value_split_across_two_reads(self) -> None:
        out, parts = stream(["s3cr3t-value"], [b"token=s3cr3t", b"-value\n"])
        assert out == b"token=" + C + b"\n"
        assert parts[0] == b"token="  # the start of the value is held back, the rest is not

    def test_output_without_values_passes_at_once(self) -> None:
        masker = StreamMasker(["s3cr3t"])
        assert masker.feed(b"hello world\n") == b"hello world\n"
        assert masker.pending == 0

    def test_holds_back_only_what_can_start_a_value(self) -> None:
        masker = StreamMasker(["abcdef"])
        assert masker.feed(b"xxab") == b"xx"
        assert masker.pending == 2
        assert masker.feed(b"z") == b"abz"
        assert masker.feed(b"abcde") == b""
        assert masker.pending == 5  # len(longest) - 1
        assert masker.flush() == b"abcde"

    def test_shorter_value_waits_for_a_longer_one(self) -> None:
        masker = StreamMasker(["abc", "abcdef"])
        assert masker.feed(b"abc") == b""
        assert masker.feed(b"dex") == C + b"dex"
        assert masker.flush() == b""

    def test_flush_masks_what_was_held(self) -> None:
        masker = StreamMasker(["abc", "abcdef"])
        assert masker.feed(b"-abcd") == b"-"
        assert masker.flush() == C + b"d"

    def test_byte_by_byte(self) -> None:
        data = b"a hunter2 b hunter22 c\n"
        out, _ = stream(["hunter2", "hunter22"], [bytes([b]) for b in data])
        assert out == b"a " + C + b" b " + C + b" c\n"


values_st = st.lists(st.text(alphabet="ab\xe9", min_size=1, max_size=6), min_size=0, max_size=4)
data_st = st.text(alphabet="ab\xe9-", max_size=60).map(lambda s: s.encode())


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[list[str], bytes, list[bytes]]:
    values = draw(values_st)
    # Mix the values into the data, so that matches are common.
    pieces = draw(st.lists(st.one_of(data_st, st.sampled_from(values or ["x"]).map(str.encode))))
    data = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return values, data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(chunkings())
@settings(max_examples=400, deadline=None)
def test_any_chunking_masks_as_the_whole(case: tuple[list[str], bytes, list[bytes]]) -> None:
    values, data, chunks = case
    out, _ = stream(values, chunks)
    assert out == mask(data, values) == oracle(data, values)


@given(chunkings())
@settings(max_examples=200, deadline=None)
def test_held_back_is_shorter_than_the_longest_value(
    case: tuple[list[str], bytes, list[bytes]],
) -> None:
    values, _, chunks = case
    masker = StreamMasker(values)
    longest = max((len(v) for v in maskable(values)), default=0)
    for chunk in chunks:
        masker.feed(chunk)
        assert masker.pending <= max(0, longest - 1)


@given(st.lists(st.text(alphabet="xyz", max_size=20).map(str.encode), max_size=10))
def test_output_without_a_value_start_is_never_held(chunks: list[bytes]) -> None:
    masker = StreamMasker(["abc", "secret"])
    for chunk in chunks:
        assert masker.feed(chunk) == chunk
