"""The Prefect adapter: the only part of the core that imports ``prefect``.

``adapter`` (steps as task runs, flows as flow runs, artifacts), ``tags`` (a run's
tags stay off its task runs), ``limits``
(global concurrency and rate limits), ``host``
(a workflow run supervised: retries, rollback, compensation), ``runs`` (flow-run
bookkeeping), ``messages`` (signals and queries as flow-run inputs), ``watch`` (one
watcher per event loop), ``approval`` (pause with a form), ``serve`` (deployments,
served workflows).
Imported lazily, the first time the ``"prefect"`` engine is asked for.
"""
