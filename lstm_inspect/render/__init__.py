"""Renderers: the only modules that import rich. They draw the plain data the core produces."""
