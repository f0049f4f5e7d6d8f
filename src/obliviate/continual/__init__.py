"""Continual learning and the learn/forget lifecycle: the other face of unlearning.

``tasks`` splits a benchmark (or reads QA files) into a sequence of tasks; ``strategies`` holds the ways of learning
them one after another (each a loss with its formula and paper, trained by ``engine.train``); ``evaluate`` the
continual metrics (pure functions); ``runner`` trains a sequence with continual evaluation every k steps; ``requests``
replays a stream of learn and forget requests, auditing after each. This layer sits between ``audit`` and ``report``.
"""
