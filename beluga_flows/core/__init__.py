"""The core vocabulary: specs, runnables, decorators and the middleware stack.

``specs`` (frozen :class:`StepSpec`/:class:`FlowSpec` and the :class:`StepLike`
protocol the engines are typed against) and ``middleware`` (how one call is carried
out) sit *below* the engines; ``runnable``, ``decorators`` and ``memory`` sit above
them, because calling a decorated step asks the engine in force to run it.
"""
