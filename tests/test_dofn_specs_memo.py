"""beam_jobs.dofn_specs_memo: the same answers as Beam's get_dofn_specs, computed once per
DoFn object, and Beam's function back after the block."""

from unittest import mock

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.runners import common
from apache_beam.transforms import userstate
from apache_beam.transforms.core import CallableWrapperDoFn
from apache_beam.transforms.timeutil import TimeDomain

from beam_jobs import dofn_specs_memo

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
    with dofn_specs_memo.installed():
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
        with dofn_specs_memo.installed():
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
    with dofn_specs_memo.installed():
        for _ in range(2):
            with pytest.raises(ValueError, match="duplicate"):
                userstate.get_dofn_specs(DuplicatedState())


def test_beams_function_is_back_after_the_block_even_nested_or_failed():
    beams = userstate.get_dofn_specs
    with pytest.raises(RuntimeError):
        with dofn_specs_memo.installed():
            memo = userstate.get_dofn_specs
            assert memo is not beams
            with dofn_specs_memo.installed():
                assert userstate.get_dofn_specs is memo
            assert userstate.get_dofn_specs is memo
            raise RuntimeError("the pipeline failed")
    assert userstate.get_dofn_specs is beams


def test_a_stateful_pipeline_runs_with_it(tmp_path):
    # Beam's stateful ParDo, built and run inside the block: the runner still sees the state.
    with dofn_specs_memo.installed():
        with beam.Pipeline() as pipeline:
            _ = (pipeline | beam.Create([("k", 3), ("k", 1), ("k", 2)]) | beam.ParDo(Stateful())
                 | beam.Map(lambda seen: (tmp_path / "seen").write_text(repr(seen))))
    assert (tmp_path / "seen").read_text() == "[1, 2, 3]"
