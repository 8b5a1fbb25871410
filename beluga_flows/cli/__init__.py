"""The ``beluga-flows`` command line: ``main`` (parser, server, run, serve) and one
module per command group (``demo``, ``deploy``, ``workflow``)."""
