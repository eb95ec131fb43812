"""Where a device keeps its identity key and the keys of the devices it trusts: :mod:`core.trust.store`."""
