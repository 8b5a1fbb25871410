"""Edges for operators: the local Prefect server, deployment files.

``server`` starts and stops the embedded Prefect server; ``deploy`` reads
``deployments/*.yaml`` and serves or registers them. The CLI sits on top of these;
nothing here imports the CLI.
"""
