"""The remembered home DERP region: round trip, another server's, and bad files."""

from __future__ import annotations

import json

import pytest

from sunbeam.services.control import lastderp

URL = "http://127.0.0.1:8080"


def test_saved_region_is_loaded_for_the_same_server_only(tmp_path):
    assert lastderp.load(tmp_path, URL) == (0, None)
    lastderp.save(tmp_path, URL, 999)
    assert lastderp.load(tmp_path, URL) == (999, None)
    assert lastderp.load(tmp_path, "https://other.example") == (0, None)
    lastderp.save(tmp_path, URL, 12)
    assert lastderp.load(tmp_path, URL) == (12, None)
    assert [p.name for p in tmp_path.iterdir()] == [lastderp.FILE]  # no temp file left behind


@pytest.mark.parametrize("body", [
    "", "{", "[]", "null", json.dumps({"control_url": URL}), json.dumps({"control_url": URL, "region": "999"}),
    json.dumps({"control_url": URL, "region": 0}), json.dumps({"control_url": URL, "region": -3}),
    json.dumps({"control_url": URL, "region": True}), json.dumps({"control_url": URL, "region": 1 << 40}),
    b"\xff\xfe".decode("latin-1"),
])
def test_a_bad_file_means_none_remembered_with_a_reason(tmp_path, body):
    (tmp_path / lastderp.FILE).write_text(body)
    region, why = lastderp.load(tmp_path, URL)
    assert region == 0
    assert why is not None and lastderp.FILE in why


def test_a_directory_in_its_place_is_a_reason_not_a_crash(tmp_path):
    (tmp_path / lastderp.FILE).mkdir()
    region, why = lastderp.load(tmp_path, URL)
    assert region == 0 and "unreadable" in why
    with pytest.raises(OSError):
        lastderp.save(tmp_path, URL, 5)
    assert [p.name for p in tmp_path.iterdir()] == [lastderp.FILE]
