"""Online experiments on rails (docs/experiments.md).

- :mod:`skyrec.experiments.config`: the ``experiments:`` and ``events:`` sections of the config (pydantic);
- :mod:`skyrec.experiments.assign`: deterministic assignment of a user to an arm (pure, no I/O);
- :mod:`skyrec.experiments.events`: the feedback event shapes, as the API accepts them and as the stream holds them;
- :mod:`skyrec.experiments.stream`: appending validated events to the Redis Stream, with a bounded backlog;
- :mod:`skyrec.experiments.control`: decisions (stop, promote, revert) recorded in the serving Redis and the state dir;
- :mod:`skyrec.experiments.runtime`: what the API keeps (config, cached decisions, the stream writer);
- :mod:`skyrec.experiments.cli`: ``skyrec experiment status|stop|promote|revert``.

This package's ``__init__`` imports nothing: :mod:`skyrec.config` imports the config models, and the core layers
must not pull in Redis clients or the CLI through it.
"""
