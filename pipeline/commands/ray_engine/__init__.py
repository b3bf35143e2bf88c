"""``extract --engine ray``: the same extraction on Ray Data, from a laptop to a cluster.

Three Ray Data stages, one module each, and the run that wires them:

- ``read``: one read task per input file (JSON Lines, text, Parquet) by the single engine's reading rules; every
  ad gets ``seq``, its position in its file, and the file's read report follows its last ad.
- ``actor``: an actor pool (``num_workers`` ``PipelineActor``s), each loading the pipeline once and handing on
  the records of its batches already in the output's shape; a killed actor is restarted and its batch retried,
  an ad that raises fails alone (a "failed" row, never retried).
- ``sink``: Parquet parts (ads, skills) per input, written atomically into ``_staging/`` by Arrow alone.
- ``output``: the output folder (``ads/``, ``skills/``, ``failed/``, ``done/``, ``summary.json``, ``run.json``):
  staged parts checked (nothing lost, nothing twice) and committed, a rerun resumed.
- ``engine``: ``RaySettings``, the Ray session, Ray Data's settings for a run, ``extract_ray`` and
  ``run_ray_command`` (the CLI's ``extract --engine ray``).

No module of the package imports spaCy or torch (the actors do, when they load the pipeline): Ray's read and
write tasks import it and start in a fraction of a second. Ray itself is imported only when a run starts.
"""

from pipeline.commands.ray_engine.actor import PipelineActor, TimedPipelineActor, result_columns, timeline_stats
from pipeline.commands.ray_engine.engine import (SECTION, STREAM_BUFFER, TESTED_RAY, RayRunResult, RaySettings,
                                                 SlowerStreamingWarning, data_context, extract_ray, import_ray,
                                                 ray_session, run_ray_command)
from pipeline.commands.ray_engine.output import OutputFolder
from pipeline.commands.ray_engine.read import InputSpec, resolve_ray_inputs

__all__ = ["SECTION", "STREAM_BUFFER", "TESTED_RAY", "InputSpec", "OutputFolder", "PipelineActor", "RayRunResult",
           "RaySettings", "SlowerStreamingWarning", "TimedPipelineActor", "data_context", "extract_ray",
           "import_ray", "ray_session", "resolve_ray_inputs", "result_columns", "run_ray_command", "timeline_stats"]
