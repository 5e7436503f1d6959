"""Rank-synchronised masks: a real two-process ``gloo`` group, and the helpers alone."""

from __future__ import annotations

import pytest

from anydrop import PortableRNG, drop_path
from tests.torch_helpers import run_ranks

# One xdist worker for the module: the two ranks start once, for all the tests that read them.
pytestmark = [pytest.mark.backends("torch"), pytest.mark.xdist_group("torch_distributed")]

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def two_ranks():
    """The masks that ``tests/distributed_worker.py`` gathered from two gloo ranks on loopback."""
    return run_ranks("tests.distributed_worker", 2)


def test_ranks_agree_on_the_shared_seed(two_ranks):
    first, second = two_ranks["seeds"]
    assert first == second
    assert 0 <= first < 2**63


def test_synchronized_generator_gives_every_rank_the_same_masks(two_ranks):
    rank0, rank1 = two_ranks["synced"]
    assert rank0 == rank1
    # ... and fresh masks per layer and per step, not one mask repeated.
    layer_masks = {tuple(mask) for step in rank0 for mask in step}
    assert len(layer_masks) == 5 * 4


def test_whole_batch_drops_agree_on_uneven_batches(two_ranks):
    rank0, rank1 = two_ranks["blocks"]
    assert rank0 == rank1
    decisions = [m[0] for step in rank0 for m in step]
    assert 0 < sum(decisions) < len(decisions)


def test_default_generators_seeded_per_rank_differ(two_ranks):
    rank0, rank1 = two_ranks["default"]
    assert rank0 != rank1  # equal with probability 2**-320


def test_portable_rng_with_the_shared_seed_agrees_across_ranks(two_ranks):
    rank0, rank1 = two_ranks["portable"]
    assert rank0 == rank1
    assert rank0 != two_ranks["synced"][0]


def test_layers_with_an_int_seed_draw_the_same_masks_on_every_rank(two_ranks):
    rank0, rank1 = two_ranks["seeded"]
    assert rank0 == rank1
    assert len({tuple(mask) for step in rank0 for mask in step}) == 5 * 4  # a stream, not one mask


class TestSynchronizedRng:
    def test_same_seed_and_step_same_masks_and_steps_differ(self):
        from anydrop.torch import synchronized_rng

        x = torch.ones(64, 2)
        a = drop_path(x, 0.5, True, rng=synchronized_rng(7, 3))
        b = drop_path(x, 0.5, True, rng=synchronized_rng(7, 3))
        c = drop_path(x, 0.5, True, rng=synchronized_rng(7, 4))
        d = drop_path(x, 0.5, True, rng=synchronized_rng(8, 3))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        assert not torch.equal(a, d)

    def test_reseeds_a_generator_in_place(self):
        from anydrop.torch import synchronized_rng

        gen = torch.Generator()
        assert synchronized_rng(7, 3, generator=gen) is gen
        fresh = synchronized_rng(7, 3)
        assert torch.equal(torch.rand(5, generator=gen), torch.rand(5, generator=fresh))

    def test_step_seeds_are_the_portable_stream(self):
        from anydrop.torch import synchronized_rng
        from tests.internals import stream_value

        assert synchronized_rng(7, 3).initial_seed() == stream_value(7, 3)
        # Value 3 of PortableRNG(7)'s stream: what a 4th sample's uniform is made of.
        kept = drop_path(torch.ones(4, 1), 0.5, True, rng=PortableRNG(7))[3, 0] != 0
        assert bool(kept) == (stream_value(7, 3) >> 11 < 2**52)

    def test_seeds_up_to_2_64_are_accepted(self):
        from anydrop.torch import synchronized_rng

        gen = synchronized_rng(2**64 - 1, 2**70)
        assert 0 <= gen.initial_seed() < 2**64

    def test_new_generator_on_the_requested_device(self):
        from anydrop.torch import synchronized_rng

        assert synchronized_rng(1, device="cpu").device == torch.device("cpu")
        gen = torch.Generator()
        assert synchronized_rng(1, device=torch.device("cpu"), generator=gen) is gen

    def test_shared_seed_needs_a_process_group(self):
        from anydrop.torch import shared_seed

        with pytest.raises(RuntimeError, match="init_process_group"):
            shared_seed()

    def test_shared_seed_refuses_inside_a_compiled_function(self):
        from anydrop.torch import shared_seed

        compiled = torch.compile(lambda x: x + shared_seed(), fullgraph=True, backend="eager")
        # Before the process-group check: the refusal does not depend on the group.
        with pytest.raises(Exception, match=r"inside a torch.compile'd region.*outside the compiled"):
            compiled(torch.ones(1))

    def test_reseeding_per_step_drives_a_compiled_layer_as_it_drives_the_eager_one(self):
        # The tensor-parallel recipe of docs/distributed.md under torch.compile: the
        # generator's draw leaves the graph, and follows each step's reseeding.
        from anydrop.torch import DropPath, synchronized_rng

        eager_rng, compiled_rng = torch.Generator(), torch.Generator()
        eager = DropPath(0.5, rng=eager_rng)
        compiled = torch.compile(DropPath(0.5, rng=compiled_rng), backend="eager")
        x = torch.randn(32, 3)
        outputs = []
        for step in range(3):
            for gen in (eager_rng, compiled_rng):
                synchronized_rng(11, step * 2 + 1, generator=gen)
            outputs.append(compiled(x))
            assert torch.equal(outputs[-1], eager(x))
        assert not torch.equal(outputs[0], outputs[1])
