"""Our userspace TCP (RFC 9293), sans-IO and batch-oriented, for the proxy service.

`TcpStack` takes IP packets in (`receive`), gives IP packets out (`poll`) and reports
`events`; time comes in as ``now`` and randomness (the secret behind ISNs and ephemeral
ports) from the ``random_bytes`` it is given. Modules, one concern each:

    segment      wire layout of TCP header and options; checksum; parse / build
    states       connection states and the (state, event) -> state table
    tcb          the control block: every variable of a connection, declared once
    connection   user calls (send/read/shutdown/abort), timers
    input        segment arrival (RFC 9293 3.10.7): fast path and the RFC's checks
    sender       ACK processing, NewReno-style / SACK loss recovery, D-SACK undo, RTO
    probes       tail loss probe (RFC 8985), zero-window probe, keepalive
    output       building segments: SYN, data, retransmissions, FIN, ACK, RST
    congestion   cwnd / ssthresh arithmetic (CUBIC, RFC 9438, by default; NewReno, RFC 5681 / 6582)
    scoreboard   the sender's SACK scoreboard (RFC 2018 / 6675)
    rack         time-based loss detection (RACK, RFC 8985)
    reassembly   the receiver's out-of-order queue and SACK blocks
    rtt          the retransmission timeout (RFC 6298)
    stack        demultiplexing, listening ports, timers heap, the public API
    ports        local ports for connections we open (RFC 6056), ISNs (RFC 6528)
    events       what `TcpStack.events` returns
"""

from .events import (
           Closed,
           Connected,
           ConnectionRequest,
           Event,
           PeerFinished,
           Readable,
           Reset,
           Writable,
)
from .ports import NoFreePort
from .stack import TcpStack

__all__ = ["Closed", "Connected", "ConnectionRequest", "Event", "NoFreePort", "PeerFinished", "Readable", "Reset",
           "TcpStack", "Writable"]
