"""beam_jobs.beam_overheads: the same answers as Beam's get_dofn_specs, computed once per
DoFn object; state samplers with a shorter period; Beam's own code back after the block."""

from unittest import mock

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.runners import common
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import userstate
from apache_beam.transforms.core import CallableWrapperDoFn
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.counters import CounterFactory

from beam_jobs import beam_overheads

BAG = userstate.BagStateSpec("seen", VarIntCoder())
TIMER = userstate.TimerSpec("flush", TimeDomain.WATERMARK)


class Stateful(beam.DoFn):
    def process(self, element, seen=beam.DoFn.StateParam(BAG), flush=beam.DoFn.TimerParam(TIMER)):
        seen.add(element[1])
        flush.set(0)

    @userstate.on_timer(TIMER)
    def on_flush(self, seen=beam.DoFn.StateParam(BAG)):
        yield sorted(seen.read())


class Plain(beam.DoFn):
    def process(self, element):
        yield element


class HoldsABoundMethod(beam.DoFn):
    """A DoFn whose instance holds a bound method with a state parameter: Beam looks at it too."""

    def __init__(self):
        super().__init__()
        self.helper = Stateful().process

    def process(self, element):
        yield element


class DuplicatedState(beam.DoFn):
    def process(self, element, a=beam.DoFn.StateParam(BAG), b=beam.DoFn.StateParam(BAG)):
        yield element


def stateful_lambda(element, seen=beam.DoFn.StateParam(BAG)):
    yield element


DOFNS = [Stateful(), Plain(), HoldsABoundMethod(), CallableWrapperDoFn(lambda x: x),
         CallableWrapperDoFn(stateful_lambda)]


@pytest.mark.parametrize("dofn", DOFNS, ids=lambda dofn: type(dofn).__name__)
def test_the_answers_are_beams(dofn):
    expected = userstate.get_dofn_specs(dofn)
    with beam_overheads.reduced():
        first, again = userstate.get_dofn_specs(dofn), userstate.get_dofn_specs(dofn)
        assert userstate.is_stateful_dofn(dofn) == bool(expected[0] or expected[1])
    assert first == again == expected


def test_the_expected_answers_are_not_empty_where_state_is_used():
    # So that the comparison above compares something: Beam finds the specs in these.
    assert userstate.get_dofn_specs(Stateful()) == ({BAG}, {TIMER})
    assert userstate.get_dofn_specs(HoldsABoundMethod()) == ({BAG}, {TIMER})
    assert userstate.get_dofn_specs(Plain()) == (set(), set())


def test_each_dofn_is_inspected_once_and_callers_get_sets_of_their_own():
    one, other = Stateful(), Stateful()
    with mock.patch.object(common, "MethodWrapper", wraps=common.MethodWrapper) as inspected:
        with beam_overheads.reduced():
            specs = userstate.get_dofn_specs(one)
            per_dofn = inspected.call_count
            specs[0].clear()
            for _ in range(5):
                assert userstate.get_dofn_specs(one) == ({BAG}, {TIMER})
            assert inspected.call_count == per_dofn
            assert userstate.get_dofn_specs(other) == ({BAG}, {TIMER})
            assert inspected.call_count == 2 * per_dofn
    assert per_dofn > 1  # one MethodWrapper per method Beam looks at


def test_an_invalid_dofn_fails_every_time():
    invalid = DuplicatedState()
    with beam_overheads.reduced():
        for _ in range(2):
            with pytest.raises(ValueError, match="duplicate"):
                userstate.get_dofn_specs(invalid)


def test_beams_code_is_back_after_the_block_even_nested_or_failed():
    specs, sampler = userstate.get_dofn_specs, statesampler.StateSampler
    with pytest.raises(RuntimeError):
        with beam_overheads.reduced():
            memo, shorter = userstate.get_dofn_specs, statesampler.StateSampler
            assert memo is not specs and shorter is not sampler
            with beam_overheads.reduced():
                assert (userstate.get_dofn_specs, statesampler.StateSampler) == (memo, shorter)
            assert (userstate.get_dofn_specs, statesampler.StateSampler) == (memo, shorter)
            raise RuntimeError("the pipeline failed")
    assert (userstate.get_dofn_specs, statesampler.StateSampler) == (specs, sampler)


def test_state_samplers_made_in_the_block_sample_more_often():
    # As Beam's BundleProcessor makes its sampler: prefix and counters, the period by default.
    with beam_overheads.reduced():
        sampler = statesampler.StateSampler("fnapi-step-1", CounterFactory())
        told = statesampler.StateSampler("fnapi-step-2", CounterFactory(), sampling_period_ms=500)
    assert isinstance(sampler, statesampler.StateSampler)  # Beam's class, outside the block too
    assert sampler.sampling_period_ms == beam_overheads.SAMPLING_PERIOD_MS == 20
    assert told.sampling_period_ms == 500
    assert statesampler.StateSampler("fnapi-step-3", CounterFactory()).sampling_period_ms == 200
    sampler.start()  # and it samples and stops like Beam's
    sampler.stop()


def test_a_stateful_pipeline_runs_with_it(tmp_path):
    # Beam's stateful ParDo, built and run inside the block: the runner still sees the state.
    with beam_overheads.reduced():
        with beam.Pipeline() as pipeline:
            _ = (pipeline | beam.Create([("k", 3), ("k", 1), ("k", 2)]) | beam.ParDo(Stateful())
                 | beam.Map(lambda seen: (tmp_path / "seen").write_text(repr(seen))))
    assert (tmp_path / "seen").read_text() == "[1, 2, 3]"
