"""Graphs and chains: builder → frozen plan → pure scheduler → driver.

``builder`` records nodes and edges (:class:`Graph`), ``plan`` validates them into a
frozen :class:`Plan` that also holds every run option, ``scheduler`` decides what
runs next from events (no I/O), ``driver`` carries the decisions out on an engine.
``chain`` and ``patterns`` (Router, scatter-gather) are built on the same pieces.
"""
