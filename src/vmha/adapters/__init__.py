"""Adapters: one folder per port, each with a real implementation and a
`fake` shared by unit tests and the simulator. Library errors are
translated into `vmha.errors` here, at the boundary (`raise X from exc`)."""
