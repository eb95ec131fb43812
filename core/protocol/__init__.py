"""The sans-I/O floor of ``core``: plain objects that never sleep, read a clock or touch a socket.

- :mod:`~core.protocol.stream`: the reliable stream (sequence numbers, acknowledgements, retransmission, windows,
  fragments, pings, slowness), whose frames every link carries;
- :mod:`~core.protocol.records`: ids, labels, the presence record, the database paths and message keys;
- :mod:`~core.protocol.negotiation`: the connection request at ``relay/negotiation/{uid}/{deviceId}``;
- :mod:`~core.protocol.presence`: who is online (:class:`PresenceView`) and whether the relay answers
  (:class:`RelayHealth`);
- :mod:`~core.protocol.packets`: the WebRTC data channel's packets (1-byte header, fragments);
- :mod:`~core.protocol.linkframes`: one stream frame as one message on a link other than the relay;
- :mod:`~core.protocol.ice`: why ICE found no path between two devices, and what would help.

It imports only core's vocabulary (``errors``, ``peer``, ``events``).
"""
