"""The engine: the runner of a pass, the per-subject loop, the services the subjects share
(limiters, the training monitor, look-up caches) and the stages in ``stages/``."""
