"""Connection states (RFC 9293 section 3.3.2) as small ints, ordered so that range tests
mean something: ``>= ESTABLISHED`` is synchronized past the handshake, ``>= TIME_WAIT``
is done for the user. REQUESTED is ours: a SYN for a listened port waiting for the user's
`accept` or `refuse`."""

from __future__ import annotations

(REQUESTED, SYN_SENT, SYN_RCVD, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK,
 TIME_WAIT, CLOSED) = range(11)

STATE_NAMES = ("REQUESTED", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
               "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT", "CLOSED")

M32 = 0xFFFFFFFF
"""Sequence numbers on the wire are 32 bits; in memory they are extended (never wrap)."""
