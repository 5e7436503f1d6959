"""DTensor and FSDP2: every entry point and rng kind on sharded tensors, over four real gloo ranks.

``tests/dtensor_worker.py`` runs on each rank (each seeding its global
generator apart, as data-parallel scripts do) and reports what it saw; these
tests check it. Placements: ``Shard(0)``, ``Replicate()``, ``Shard(1)`` and
``Shard(2)`` on a mesh of 4 (10 samples and 6 features: uneven shards), and
``(Shard(0), Shard(2))``, ``(Shard(0), Replicate())`` on a 2 x 2 mesh.
"""

from __future__ import annotations

import pytest

from tests.torch_helpers import run_ranks

pytestmark = [pytest.mark.backends("torch"), pytest.mark.xdist_group("torch_dtensor")]

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.tensor")

PLACEMENTS = ["shard0", "replicate", "shard1", "shard2", "dp_tp", "dp_replicate"]
#: Placements whose sample axis is split unevenly (10 samples over 4 ranks).
UNEVEN_SAMPLES = {"shard0"}
SEEDED = ["int", "generator", "portable"]
ENTRIES = [
    "drop_path",
    "drop_path_axis1",
    "drop_path_bf16",
    "drop_path_add",
    "residual_fixed",
    "layer",
    "residual_layer",
]
#: The entry points' mask axis; each case's placements shard it (independent ranks) or not.
SAMPLE_AXIS = {name: 1 if name == "drop_path_axis1" else 0 for name in ENTRIES}
#: Where rng=None may draw: every mesh dimension shards the mask's axis.
SHARDS_THE_SAMPLES = {("shard0", 0), ("shard1", 1)}


@pytest.fixture(scope="module")
def ranks():
    return run_ranks("tests.dtensor_worker", 4, timeout=420)


def _case(ranks, placement, rng, entry):
    case = ranks["cases"][f"{placement}/{rng}/{entry}"]
    assert "error" not in case, case["error"]
    return case


def _is_drop_path_output(out, x, axis, keep):
    """Each index along ``axis`` of out is all zeros or all about ``x / keep`` (bfloat16 rounds it)."""
    ratio = (out / x).movedim(axis, 0).flatten(1)
    scaled = torch.full_like(ratio[0], 1 / keep)
    return all(bool((row == 0).all()) or torch.allclose(row, scaled, rtol=0.01) for row in ratio)


@pytest.mark.parametrize(
    ("placement", "rng", "entry"),
    [
        (placement, rng, entry)
        for placement in PLACEMENTS
        for rng in SEEDED
        for entry in ENTRIES
        # The fixed-size residual refuses uneven sample shards (tested below).
        if not (entry.startswith("residual") and placement in UNEVEN_SAMPLES)
    ],
)
def test_seeded_masks_are_the_unsharded_ones_and_every_rank_holds_its_part(ranks, placement, rng, entry):
    case = _case(ranks, placement, rng, entry)
    assert case["is_dtensor"]
    for full in case["full"]:
        assert full == case["reference"]  # what the same rng draws for the unsharded tensor
    # Every rank's local part is rank 0's copy of it: replicas agree, whatever each rank's global seed.
    assert all(all(per_draw) for per_draw in case["parts_agree"])


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_torch_generator_drives_the_mask(ranks, placement):
    # DTensor's own random ops ignore a generator: the masks here come from it.
    generator = _case(ranks, placement, "generator", "drop_path")["full"][0]
    seeded = _case(ranks, placement, "int", "drop_path")["full"][0]
    assert generator != seeded


@pytest.mark.parametrize("entry", [e for e in ENTRIES if not e.startswith("residual")])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_rng_none_draws_shard_locally_or_refuses(ranks, placement, entry):
    case = ranks["cases"][f"{placement}/none/{entry}"]
    if (placement, SAMPLE_AXIS[entry]) not in SHARDS_THE_SAMPLES:
        assert case["error"].startswith("ValueError: rng=None draws from each rank's own global generator")
        assert "anydrop.torch.synchronized_rng" in case["error"]
        return
    assert "error" not in case
    assert all(all(per_draw) for per_draw in case["parts_agree"])
    x = torch.tensor(ranks["cases"]["x"])
    keep = 0.7 if entry == "drop_path_bf16" else 0.5
    axis = SAMPLE_AXIS[entry]
    for full in case["full"]:
        out = torch.tensor(full) - (x if entry == "drop_path_add" else 0)
        assert _is_drop_path_output(out, x, axis, keep)
    if entry in {"drop_path", "drop_path_axis1", "layer"}:
        # Each rank drew its own part of the mask from its own global generator, as
        # drop_path draws for that rank's local tensor: independent shards.
        for rank, shape in enumerate(case["local_shapes"]):
            torch.manual_seed(1000 + rank)
            mask_shape = [shape[d] if d == axis else 1 for d in range(len(shape))]
            expected = [torch.empty(mask_shape).bernoulli_(0.5) * 2 for _ in range(3)]
            start = sum(s[axis] for s in case["local_shapes"][:rank])
            for full, mask in zip(case["full"], expected, strict=True):
                part = torch.tensor(full).narrow(axis, start, shape[axis])
                assert torch.equal(part, x.narrow(axis, start, shape[axis]) * mask)


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("entry", ["residual_fixed", "residual_layer"])
def test_rng_none_refuses_the_fixed_size_subset(ranks, placement, entry):
    error = ranks["cases"][f"{placement}/none/{entry}"]["error"]
    if placement in UNEVEN_SAMPLES:
        assert error.startswith("ValueError: shards=4 does not divide the 10 samples")
    else:
        assert error.startswith("ValueError: drop_path_residual with fixed_size=True on a DTensor")


@pytest.mark.parametrize("rng", ["none", *SEEDED])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_residual_of_data_dependent_size_refuses(ranks, placement, rng):
    error = ranks["cases"][f"{placement}/{rng}/residual"]["error"]
    assert error.startswith("TypeError: drop_path_residual with fixed_size=False")
    assert "pass fixed_size=True" in error


def test_fsdp2_trains_as_ddp_does_with_the_same_masks(ranks):
    result = ranks["training"]
    assert result["fsdp_sharded"]
    for ddp, fsdp in zip(result["ddp_losses"], result["fsdp_losses"], strict=True):
        torch.testing.assert_close(torch.tensor(fsdp), torch.tensor(ddp), rtol=1e-5, atol=1e-6)
    for ddp_count, fsdp_count in result["dropped"]:
        assert ddp_count == fsdp_count > 0  # the same samples dropped, and some were
    assert result["ddp_weights"].keys() == result["fsdp_weights"].keys()
    for name, ddp in result["ddp_weights"].items():
        fsdp = torch.tensor(result["fsdp_weights"][name])
        torch.testing.assert_close(fsdp, torch.tensor(ddp), rtol=1e-5, atol=1e-6)
        assert not torch.equal(fsdp, torch.tensor(result["initial_weights"][name]))  # trained


def test_tensor_parallel_recipe_agrees_in_a_group_and_differs_across_groups(ranks):
    result = ranks["tensor_parallel"]
    masks = {}
    for rank, dp in enumerate(result["dp_ranks"]):
        masks.setdefault(dp, []).append(result["masks"][rank])
    assert sorted(masks) == [0, 1]
    for group in masks.values():
        assert all(m == group[0] for m in group)  # the tensor-parallel ranks of one batch agree
    assert masks[0][0] != masks[1][0]  # the data-parallel groups draw apart
    flat = [v for step in masks[0][0] for v in step]
    assert 0 < sum(flat) < len(flat)


def test_shared_seed_inside_torch_compile_refuses_on_every_rank_without_hanging(ranks):
    assert ranks["compiled_shared_seed"] == [True] * 4


INPUT_PLACEMENTS = {
    "shard0": "(Shard(dim=0),)",
    "replicate": "(Replicate(),)",
    "shard1": "(Shard(dim=1),)",
    "shard2": "(Shard(dim=2),)",
    "dp_tp": "(Shard(dim=0), Shard(dim=2))",
    "dp_replicate": "(Shard(dim=0), Replicate())",
}


@pytest.mark.parametrize("rng", ["none", *SEEDED])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_drop_path_and_drop_path_add_communicate_nothing_and_keep_the_placements(ranks, placement, rng):
    for entry in ("drop_path", "drop_path_axis1", "drop_path_bf16", "drop_path_add", "layer"):
        case = ranks["cases"][f"{placement}/{rng}/{entry}"]
        if "error" not in case:  # rng=None refuses some placements, before anything is drawn
            assert case["collectives"] == {}, entry
            assert case["placements"] == INPUT_PLACEMENTS[placement], entry


@pytest.mark.parametrize("placement", sorted(set(PLACEMENTS) - UNEVEN_SAMPLES))
@pytest.mark.parametrize("entry", ["residual_fixed", "residual_layer"])
def test_the_fixed_size_residual_runs_each_shard_locally(ranks, placement, entry):
    # Per shard of the sample axis, each rank gathers and runs the branch on its own samples.
    assert _case(ranks, placement, "int", entry)["collectives"] == {}


@pytest.mark.parametrize("rng", SEEDED)
@pytest.mark.parametrize("entry", ["residual_fixed", "residual_layer"])
def test_the_fixed_size_residual_refuses_uneven_sample_shards(ranks, entry, rng):
    error = ranks["cases"][f"shard0/{rng}/{entry}"]["error"]
    assert error.startswith("ValueError: shards=4 does not divide the 10 samples")


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_gradients_are_the_unsharded_ones(ranks, placement):
    assert ranks["cases"]["gradients"][placement]


# --- In this process: a one-rank group, for torch.compile ---


@pytest.fixture(scope="module")
def one_rank_mesh():
    from torch.distributed.device_mesh import init_device_mesh

    dist = torch.distributed
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no torch.distributed gloo backend")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_compiles_to_one_graph_with_rng_none_on_a_sample_shard(one_rank_mesh):
    from torch.distributed.tensor import Shard, distribute_tensor

    from anydrop import drop_path

    x = distribute_tensor(torch.randn(16, 3), one_rank_mesh, [Shard(0)])
    compiled = torch.compile(lambda a: drop_path(a, 0.5, True), fullgraph=True, backend="aot_eager")
    torch.manual_seed(3)
    out = compiled(x)
    torch.manual_seed(3)
    assert out.placements == x.placements
    assert torch.equal(out.full_tensor(), drop_path(x, 0.5, True).full_tensor())


@pytest.mark.parametrize("rng", ["int", "portable"])
def test_compiled_seeded_draws_are_the_eager_ones(one_rank_mesh, rng):
    from torch.distributed.tensor import Replicate, distribute_tensor

    from anydrop import PortableRNG, drop_path

    def make():
        return 5 if rng == "int" else PortableRNG(5)

    x = distribute_tensor(torch.randn(16, 3), one_rank_mesh, [Replicate()])
    compiled = torch.compile(lambda a, r: drop_path(a, 0.5, True, rng=r), backend="aot_eager")
    out = compiled(x, make())
    assert out.placements == x.placements
    assert torch.equal(out.full_tensor(), drop_path(x, 0.5, True, rng=make()).full_tensor())
