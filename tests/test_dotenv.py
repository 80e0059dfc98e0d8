"""dotenv files: parsing, values, re-rendering with the layout kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jinja_apsecrets.dotenv import DotenvError, parse, quote

SAMPLE = """\
# database
export DB_USER=app
DB_PASSWORD='<<local|ap_sep_v1|app:pw>>'   # from the manager

GREETING="hello\\nworld \\"you\\""
URL=postgres://app@db/app  # inline comment
EMPTY=
SPACED = two words
BARE_NAME
CERT="-----BEGIN-----
abc
-----END-----"
LAST=x\r
"""


class TestParse:
    def test_values(self) -> None:
        assert parse(SAMPLE).values() == {
            "DB_USER": "app",
            "DB_PASSWORD": "<<local|ap_sep_v1|app:pw>>",
            "GREETING": 'hello\nworld "you"',
            "URL": "postgres://app@db/app",
            "EMPTY": "",
            "SPACED": "two words",
            "CERT": "-----BEGIN-----\nabc\n-----END-----",
            "LAST": "x",
        }

    def test_entries_keep_quoting_and_export(self) -> None:
        entries = {ln.entry.name: ln.entry for ln in parse(SAMPLE).lines if ln.entry}
        assert entries["DB_USER"].export
        assert entries["DB_PASSWORD"].quote == "'"
        assert entries["GREETING"].quote == '"'
        assert entries["URL"].quote == ""
        assert entries["BARE_NAME"].value is None

    def test_reprs_hold_no_value(self) -> None:
        assert "hunter2" not in repr(parse("A=hunter2\n"))

    def test_later_lines_win(self) -> None:
        assert parse("A=1\nA=2\n").values() == {"A": "2"}

    def test_single_quotes_are_literal(self) -> None:
        assert parse("A='a\\nb $X # no'\n").values() == {"A": "a\\nb $X # no"}

    def test_hash_without_blank_is_part_of_an_unquoted_value(self) -> None:
        assert parse("A=a#b\n").values() == {"A": "a#b"}

    @pytest.mark.parametrize(
        ("text", "lineno"),
        [
            ("A=1\nnot a line\n", 2),
            ("A=1\nB='open\n", 2),
            ('A="open\n', 1),
            ("A='x' junk\n", 1),
            ("1A=x\n", 1),
        ],
    )
    def test_errors_name_the_line_not_its_text(self, text: str, lineno: int) -> None:
        with pytest.raises(DotenvError) as info:
            parse(text)
        assert info.value.lineno == lineno
        assert str(info.value).startswith(f"line {lineno}: ")
        assert "junk" not in str(info.value)
        assert "open" not in str(info.value).replace("unterminated", "")


class TestRender:
    def test_unchanged_is_byte_for_byte(self) -> None:
        assert parse(SAMPLE).render() == SAMPLE

    def test_replaced_values_keep_the_rest_of_the_line(self) -> None:
        env = parse(SAMPLE)
        line = next(ln for ln in env.lines if ln.entry and ln.entry.name == "DB_PASSWORD")
        out = env.render({line.lineno: "s3cret"})
        assert "DB_PASSWORD='s3cret'   # from the manager\n" in out
        assert out.replace("'s3cret'", "'<<local|ap_sep_v1|app:pw>>'") == SAMPLE

    def test_an_unquoted_value_is_quoted_when_it_needs_it(self) -> None:
        env = parse("export A=<<x|ap_sep_v1|y>> # c\n")
        assert env.render({1: "p@ss word"}) == "export A='p@ss word' # c\n"
        assert env.render({1: "plain-value"}) == "export A=plain-value # c\n"
        assert env.render({1: "it's\nmulti"}) == 'export A="it\'s\\nmulti" # c\n'

    def test_multiline_values_are_replaced_whole(self) -> None:
        env = parse('A=1\nCERT="x\ny"\nB=2\n')
        assert env.render({2: "pem\nlines"}) == 'A=1\nCERT="pem\\nlines"\nB=2\n'


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_quoted_values_read_back(value: str) -> None:
    for prefer in ("", "'", '"'):
        assert parse(f"A={quote(value, prefer)}\n").values() == {"A": value}  # type: ignore[arg-type]
