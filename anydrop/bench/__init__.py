"""Side-by-side benchmark: ``python -m anydrop.bench``.

Runs, in one process, anydrop against timm's ``drop_path`` (timm's own
``timm/layers/drop.py``), torchvision's ``stochastic_depth`` where it imports,
the classic two-pass version (``x.div(keep) * floor(keep + rand)``), on NumPy
the seed function (a binomial mask, unchecked) and the one-pass memory limit
(``x * mask`` with the mask already drawn), on NumPy, PyTorch and Dask (against
a hand-written Dask mask, with the task count of each graph), on JAX (eager and
jitted, against a hand-written mask and ``nnx.Dropout``) and on CuPy with a
CUDA device; it also counts the peak memory of a PyTorch training step. A
backend that is not installed is skipped with a line saying so. Every figure
is the median of interleaved repeats after a warm-up; ratios compare
implementations timed in the same run. It prints a markdown table and writes
it (``results.md``), the data (``results.json``), the headline ratios rendered
from that data (``headline.md``, see :func:`headline`) and, with matplotlib, a
plot (``results.png``) to ``--out``.

The modules, in the order a run uses them: ``_measure`` (a case, its timing,
the machine), ``_torch_cases``, ``_array_cases``, ``_dask_cases`` and
``_jax_cases`` (what is timed), ``_memory`` (PyTorch's peak memory of a
training step), ``_report`` (tables, JSON records, plot, headline) and
``_cli`` (``run`` and ``main``). Nothing here is imported by ``import anydrop``.
"""

from ._cli import main, run
from ._measure import Case
from ._report import headline

__all__ = ["Case", "headline", "main", "run"]
