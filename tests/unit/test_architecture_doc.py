"""docs/architecture.md's socket table says what shared/channels.py declares: one row per
channel, with its pattern, binder, connectors and every message type of its codecs."""

from __future__ import annotations

from pathlib import Path

from sunbeam.shared import channels

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0] != "`name`":
            rows[cells[0].strip("`")] = cells
    return rows


def test_the_socket_table_matches_the_channels_module():
    rows = _rows()
    assert set(rows) == {c.name for c in channels.ALL}
    for c in channels.ALL:
        name, pattern, binder, connectors, messages = rows[c.name]
        assert pattern == c.pattern, c.name
        assert binder.strip("`") == c.binder, c.name
        assert [x.strip() for x in connectors.split(",")] == list(c.connectors), c.name
        for codec in (c.codec, c.reply_codec):
            for member in codec.members if codec else ():
                if c.name.endswith("-ctl") and codec is c.reply_codec:
                    continue  # the ctl replies are summed up as "replies"
                assert f"`{member.__name__}`" in messages, f"{c.name}: {member.__name__} missing"
