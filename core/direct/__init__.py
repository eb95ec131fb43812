"""The direct link: TCP with mutual TLS 1.3 between the two devices (:mod:`~core.direct.link`), per-session
certificates pinned through the signalling (:mod:`~core.direct.certs`), and the per-connection attempts that open,
attach and re-open it (:mod:`~core.direct.upgrade`), which see a connection only as a :class:`core.link.LinkHost`.
Never imports :mod:`core.relay`, :mod:`core.webrtc` or the manager."""
