"""The seed's assumptions, one module each, on the protocol of `base` (see `protocol`)."""
