"""The declarative workflow engine: workflows written as data (YAML or a dict).

* :mod:`.model` — the file format (pydantic, ``extra="forbid"``) and its JSON Schema;
* :mod:`.expressions` — CEL behind one small interface (compiled once, values bound
  as variables, never ``eval``);
* :mod:`.actions` — the registry of named actions (``@bf.action``);
* :mod:`.compile` — validation that reports every problem with its path, and the
  frozen :class:`~.compile.DefinitionPlan` a definition compiles to: a graph
  :class:`~beluga_flows.graph.plan.Plan` whose nodes are the steps;
* :mod:`.runtime` — what each step type does when its node runs (the graph driver
  and scheduler carry the plan out: no wave barrier), failure handling, rollback;
* :mod:`.engine` — :class:`~.engine.WorkflowEngine`, :class:`~.engine.ExecutionResult`
  and the SLA monitor.
"""
