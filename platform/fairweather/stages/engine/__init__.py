"""The restore-and-score engine shared by ``fairweather evaluate`` and ``fairweather pseudolabel``.

- :mod:`~fairweather.stages.engine.rows`: the row type (:func:`work_row`, ``ROW_SCHEMA``), the read step, output
  folders and checkpoint names.
- :mod:`~fairweather.stages.engine.score`: the restore and score steps as plain functions, the in-process path
  (``fairweather train``'s final test table) and the per-weather means.
- :mod:`~fairweather.stages.engine.actors` and :mod:`~fairweather.stages.engine.pipeline`: the Ray Data actors and
  :func:`restore_and_score`, the lazy pipeline.
"""
