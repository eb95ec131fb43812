"""WebRTC: the aiortc link (:mod:`~core.webrtc.link`) and the upgrade that opens, attaches and re-opens it on a
connection (:mod:`~core.webrtc.upgrade`), which it sees only as a :class:`core.link.LinkHost`. Never imports
:mod:`core.relay` or the manager."""
