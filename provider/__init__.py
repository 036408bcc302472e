"""Processing provider `clearsky`: thin algorithms over the engine in `clearsky.core`."""
