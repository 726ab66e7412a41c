"""Batch word sums (numpy per group of equal-length packets) against RFC 1071 itself."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sunbeam.shared.proto.ip.wordsums import MIN_GROUP, load_numpy, word_sum, word_sums

from .vectors import rfc1071

load_numpy()  # the proxy loads it on a thread at its first group (tcpengine); here, now


def reference(data: bytes) -> int:
    return (~rfc1071(data) & 0xFFFF) % 0xFFFF  # the one's-complement sum, modulo 0xffff


@given(st.binary(max_size=200))
def test_word_sum_is_the_rfc1071_sum(data):
    assert word_sum(data) == reference(data)


@given(st.integers(0, 1500), st.integers(MIN_GROUP, 40), st.integers(0, 1 << 32))
def test_a_group_of_equal_lengths_any_alignment(length, count, seed):
    rnd = random.Random(seed)
    packets = [rnd.randbytes(length) for _ in range(count)]
    assert word_sums(packets) == [reference(p) for p in packets]


@given(st.lists(st.binary(max_size=70), max_size=60), st.integers(0, 3), st.integers(0, 1 << 32))
def test_mixed_lengths_keep_their_order(extra, odd_len, seed):
    """Some lengths form groups (numpy), the rest go one by one; results stay in order."""
    rnd = random.Random(seed)
    packets = extra + [rnd.randbytes(1236 + odd_len) for _ in range(MIN_GROUP + 2)] + extra[:3]
    rnd.shuffle(packets)
    assert word_sums(packets) == [reference(p) for p in packets]


def test_all_ones_and_all_zeros():
    ones, zeros = [b"\xff" * 1240] * MIN_GROUP, [bytes(1241)] * MIN_GROUP
    assert word_sums(ones) == [0] * MIN_GROUP == [reference(p) for p in ones]
    assert word_sums(zeros) == [0] * MIN_GROUP
