"""Connection states (RFC 9293 section 3.3.2) and every transition between them, in one table.

States are small ints, ordered so that range tests mean something: ``>= ESTABLISHED`` is
synchronized past the handshake, ``>= TIME_WAIT`` is done for the user. REQUESTED is
ours: a SYN for a listened port waiting for the user's `accept` or `refuse`.

`NEXT_STATE` maps (state, event) to the next state, and the connection changes state
only through it (`tcb._Tcb._go`): a pair missing from the table is our own bug and
raises. The events, and where the code takes them::

    CONNECT    the user's connect                           stack.connect
    SYN_IN     a SYN: for a listened port (CLOSED), or       stack._passive_open,
               a simultaneous open (SYN-SENT)                input._input_syn_sent
    ACCEPT     the user's accept                            connection.accept
    SYN_ACKED  our SYN acknowledged (SYN-ACK, or the ACK)   tcb._established
    CLOSE      the user's shutdown: FIN queued; in the       connection.shutdown,
               handshake it waits for ESTABLISHED            tcb._established
    FIN_IN     the peer's FIN, in order                     input._fin_received, and
                                                            a FIN again in TIME-WAIT
    FIN_ACKED  our FIN acknowledged                         input._check_ack
    DELETE     the control block goes: RST, abort, refuse,  tcb._finish
               timeouts, and the end of TIME-WAIT / LAST-ACK

The diagram (RFC 9293 figure 5, plus REQUESTED)::

    CLOSED --CONNECT--> SYN-SENT --SYN_ACKED--> ESTABLISHED
    CLOSED --SYN_IN--> REQUESTED --ACCEPT--> SYN-RCVD --SYN_ACKED--> ESTABLISHED
    SYN-SENT --SYN_IN--> SYN-RCVD (simultaneous open)
    ESTABLISHED --CLOSE--> FIN-WAIT-1 --FIN_ACKED--> FIN-WAIT-2 --FIN_IN--> TIME-WAIT
    ESTABLISHED --FIN_IN--> CLOSE-WAIT --CLOSE--> LAST-ACK --FIN_ACKED--> CLOSED
    FIN-WAIT-1 --FIN_IN--> CLOSING --FIN_ACKED--> TIME-WAIT --(2 s) DELETE--> CLOSED
"""

from __future__ import annotations

__all__ = ["NEXT_STATE", "STATE_NAMES"]

(REQUESTED, SYN_SENT, SYN_RCVD, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK,
 TIME_WAIT, CLOSED) = range(11)

STATE_NAMES = ("REQUESTED", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
               "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT", "CLOSED")

CONNECT, SYN_IN, ACCEPT, SYN_ACKED, CLOSE, FIN_IN, FIN_ACKED, DELETE = (
    "CONNECT", "SYN_IN", "ACCEPT", "SYN_ACKED", "CLOSE", "FIN_IN", "FIN_ACKED", "DELETE")

NEXT_STATE: dict[tuple[int, str], int] = {
    # opening
    (CLOSED, CONNECT): SYN_SENT,
    (CLOSED, SYN_IN): REQUESTED,
    (REQUESTED, ACCEPT): SYN_RCVD,
    (SYN_SENT, SYN_IN): SYN_RCVD,
    (SYN_SENT, SYN_ACKED): ESTABLISHED,
    (SYN_RCVD, SYN_ACKED): ESTABLISHED,
    # closing: ours
    (SYN_SENT, CLOSE): SYN_SENT,  # the FIN waits for the handshake (then ESTABLISHED --CLOSE-->)
    (SYN_RCVD, CLOSE): SYN_RCVD,
    (ESTABLISHED, CLOSE): FIN_WAIT_1,
    (CLOSE_WAIT, CLOSE): LAST_ACK,
    (FIN_WAIT_1, FIN_ACKED): FIN_WAIT_2,
    (CLOSING, FIN_ACKED): TIME_WAIT,
    (LAST_ACK, FIN_ACKED): CLOSED,
    # closing: the peer's
    (SYN_RCVD, FIN_IN): CLOSE_WAIT,
    (ESTABLISHED, FIN_IN): CLOSE_WAIT,
    (FIN_WAIT_1, FIN_IN): CLOSING,
    (FIN_WAIT_2, FIN_IN): TIME_WAIT,
    (TIME_WAIT, FIN_IN): TIME_WAIT,  # a retransmitted FIN: the 2 s start again
    # the control block goes, from any state (CLOSED too: after LAST-ACK's FIN_ACKED)
    **{(state, DELETE): CLOSED for state in range(11)},
}

M32 = 0xFFFFFFFF
"""Sequence numbers on the wire are 32 bits; in memory they are extended (never wrap)."""
