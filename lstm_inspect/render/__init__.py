"""Renderers: the only modules that import rich. They draw the plain data the core produces (terminal tables,
the machine formats of `check`, the HTML report). May import every layer below `cli` (docs/architecture.md)."""
