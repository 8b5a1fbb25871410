"""Edges for operators, shared by the CLI commands and below them.

``targets`` loads ``FILE:NAME`` objects and parses ``k=v`` params, ``server``
starts and stops the local Prefect server (and the home's detached one),
``serving`` runs the demo's background ``serve``, ``deploy`` reads
``deployments/*.yaml`` and builds their Prefect deployments. The CLI sits on top
of these; nothing here imports the CLI.
"""
