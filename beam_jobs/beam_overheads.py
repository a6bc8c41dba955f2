"""Two fixed costs of Beam 2.61's Python SDK, cut while this project's jobs build and run
their pipelines (`reduced()`, entered by local_workers.pipeline).

- **"Is this DoFn stateful?"** Beam answers it (`userstate.get_dofn_specs`) by inspecting
  every method of the DoFn, some 30 `inspect.signature` calls, and asks again and again for
  the same DoFn: 470 times (some 14,000 signatures) while the statistics job's pipeline of
  68 ParDos is built, most of them TFDV's: 0.15-0.2 s before any data is read. The answer depends on
  the DoFn object only (its class's methods, the functions it wraps, any bound method it
  holds), none of which a pipeline changes once a DoFn is built, so it is kept per object
  while the object lives. Beam's function computes every answer; a DoFn Beam finds invalid
  (a duplicated state parameter) raises on every call, as before.
- **A bundle's end waits for Beam's state sampler.** The thread that times each step sleeps
  between samples, its sleep growing to 200 ms, and ending a bundle waits for that sleep to
  end: up to 0.2 s after each long bundle (each pass of the statistics job over its input).
  Samples every SAMPLING_PERIOD_MS at most make the wait that short, and the step timings
  finer; the thread wakes 50 times a second while a bundle runs.

Only the process in the block and the workers forked from it are affected: Dataflow and
Flink workers, and Beam's own worker processes, run Beam's code as it is. The block is for one
thread (the job's); a Beam module imported inside it that copies get_dofn_specs by name keeps
the memo afterwards, which gives Beam's answers.
"""

import contextlib
import weakref
from typing import Callable, Dict, Iterator, Set, Tuple

from apache_beam.runners.worker import statesampler
from apache_beam.transforms import userstate

SAMPLING_PERIOD_MS = 20
Specs = Tuple[Set, Set]
_active = False


def memoized(compute: Callable[[object], Specs]) -> Callable[[object], Specs]:
    """`compute(dofn)` (Beam's get_dofn_specs) remembered per live DoFn object."""
    known: Dict[int, Tuple[weakref.ref, Specs]] = {}

    def get_dofn_specs(dofn) -> Specs:
        entry = known.get(id(dofn))
        if entry is None or entry[0]() is not dofn:
            specs = compute(dofn)
            try:
                ref = weakref.ref(dofn, lambda _, key=id(dofn): known.pop(key, None))
            except TypeError:  # a class without weak references: not remembered
                return specs
            entry = known[id(dofn)] = (ref, specs)
        state_specs, timer_specs = entry[1]
        return set(state_specs), set(timer_specs)  # callers get sets of their own, as from Beam

    return get_dofn_specs


def shorter_sampling(beams: type) -> type:
    """Beam's StateSampler class, sampling every SAMPLING_PERIOD_MS at most by default."""

    class StateSampler(beams):
        def __init__(self, prefix, counter_factory, sampling_period_ms=SAMPLING_PERIOD_MS):
            super().__init__(prefix, counter_factory, sampling_period_ms)

    return StateSampler


@contextlib.contextmanager
def reduced() -> Iterator[None]:
    """Within the block, both costs are cut (module docstring); nested blocks share the
    outer one, and Beam's own code is back when the outer one ends."""
    global _active
    if _active:
        yield
        return
    specs, sampler = userstate.get_dofn_specs, statesampler.StateSampler
    userstate.get_dofn_specs, statesampler.StateSampler = memoized(specs), shorter_sampling(sampler)
    _active = True
    try:
        yield
    finally:
        userstate.get_dofn_specs, statesampler.StateSampler = specs, sampler
        _active = False
