"""Durable workflows: the live run (pure bookkeeping), in-workflow helpers, the API.

``live`` (:class:`LiveRun`: durable keys, signals, approvals, compensations; no I/O)
sits below the engines, which fill and read it. ``inside`` (``wait_for_signal``,
``request_approval``, ``compensate`` …), ``workflow`` and ``client`` sit above them.
"""
