"""Resilience policies: small frozen values with pure decisions, and their stores.

``retry`` (:class:`RetryPolicy`: delay before attempt *n*, or give up), ``breaker``
(circuit states, a pure transition function, listeners), ``stores`` (where breaker
state lives: memory, Redis) and ``limits`` (concurrency and rate-limit declarations,
the in-process limits of the local engine). Nothing here knows about steps, engines
or Prefect: the middleware (:mod:`beluga_flows.core.middleware`) applies them.
"""
