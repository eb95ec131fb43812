"""The relay: the firebase-admin seam (:mod:`~core.relay.firebase`), the heartbeat (:mod:`~core.relay.heartbeat`)
and the relay connection (:mod:`~core.relay.connection`). Never imports :mod:`core.webrtc` or the manager."""
