"""Beam's "is this DoFn stateful?" answered once per DoFn object while a job's pipeline is
built and run, not every time Beam asks.

Beam 2.61 answers it (`userstate.get_dofn_specs`) by inspecting every method of the DoFn,
some 30 `inspect.signature` calls, and asks again and again for the same DoFn: 470 times
(60,000 signatures) while the statistics job's pipeline of 68 ParDos is built, most of them
TFDV's. That was 0.2 s of the 0.6 s it takes to build and submit that pipeline, paid by every
run before any data is read (and again by the DirectRunner's worker for each stage it sets up).

The answer depends on the DoFn object only (its class's methods, the functions it wraps, any
bound method it holds), none of which a pipeline changes once a DoFn is built, so it is kept
per object, for as long as the object lives. Beam's own function computes every answer; a
DoFn Beam finds invalid (a duplicated state parameter) raises on every call, as before. Only
the process that uses this context is affected: Dataflow and Flink workers run Beam's code as
it is.
"""

import contextlib
import weakref
from typing import Callable, Dict, Iterator, Set, Tuple

from apache_beam.transforms import userstate

Specs = Tuple[Set, Set]


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

    get_dofn_specs.beams = compute
    return get_dofn_specs


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Within the block, Beam's get_dofn_specs is remembered per DoFn (module docstring);
    nested uses share the outer one, and Beam's own function is back when the outer one ends."""
    beams = userstate.get_dofn_specs
    if hasattr(beams, "beams"):  # installed by an enclosing block
        yield
        return
    userstate.get_dofn_specs = memoized(beams)
    try:
        yield
    finally:
        userstate.get_dofn_specs = beams
