"""The fused linear attention step (shift, feature map, fixation, Eq. 3) against its PyTorch
reference, forward and every gradient, and inside the LVT model against the composed path.

On CPU the kernels run through Triton's interpreter at tiny, odd sizes (groups longer than one
block, head widths that need padding, borders of the grid where shifted channels read zeros); on
a CUDA machine the ``gpu`` tests run them compiled at the sizes of LVT base.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not importable (it is in the test extras)")

import tubelet  # noqa: E402
from tubelet.attention.linear import functional, fused  # noqa: E402
from tubelet.attention.shift import ChannelShift  # noqa: E402
from tubelet.convert.lvt import official_arguments  # noqa: E402
from tubelet.kernels.linear_step import STEP_DOT_OPERANDS, STEP_KEY_SPLIT, triton_linear_step  # noqa: E402
from tubelet.kernels.linear_step import triton as step_kernels  # noqa: E402
from tubelet.kernels.linear_step.reference import gather_shift, linear_step_reference  # noqa: E402
from tubelet.layers.shape import VideoShape  # noqa: E402

EPS = 1e-6
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHIFTS = {
    "none": (),
    "temporal": (ChannelShift("temporal", 1, 8),),
    "spatial": (ChannelShift("spatial", 1),),
    "both": (ChannelShift("temporal", 1, 8), ChannelShift("spatial", 1)),
}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert not torch.isnan(a).any()
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


GATE_NAMES = {0: (), 1: ("weight", "bias"), 2: ("weight", "bias", "key_weight", "key_bias")}


def step_inputs(seed: int, batch: int, shape: VideoShape, heads: int, d: int, gates: int, dtype=torch.float32, device=DEVICE):
    """``qkv [B, L, 3, heads, d]`` as a projection gives it, and the fixation gates' parameters
    by the kernel's argument names: none, one ``phi`` shared by Q and K, or ``phi_q`` and ``phi_k``."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, shape.num_patches, 3, heads, d, generator=g)
    qkv = qkv.to(device=device, dtype=dtype).requires_grad_()
    gate = {}
    for name in GATE_NAMES[gates]:
        value = torch.randn(d, 3 * d, generator=g) * (3 * d) ** -0.5 if name.endswith("weight") else torch.randn(d, generator=g) * 0.5
        gate[name] = value.to(device).requires_grad_()
    return qkv, gate


def check_against_reference(qkv, gate: dict, tolerance: float, **options) -> None:
    """Forward and the gradients of ``qkv`` and every gate parameter against the float64 reference."""
    out = triton_linear_step(qkv, gate.get("weight"), gate.get("bias"), **{k: v for k, v in gate.items() if k.startswith("key")}, **options)
    assert out.dtype == qkv.dtype and out.shape == (*qkv.shape[:2], *qkv.shape[3:])
    names = ["qkv", *gate]
    inputs = [qkv, *gate.values()]
    wide = {name: t.detach().double().requires_grad_() for name, t in zip(names, inputs)}
    ref = linear_step_reference(wide["qkv"], wide.get("weight"), wide.get("bias"), key_weight=wide.get("key_weight"),
                                key_bias=wide.get("key_bias"), **options)
    assert relative_error(out, ref) < tolerance
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(99)).to(out)
    grads = torch.autograd.grad(out, inputs, grad)
    grads_ref = torch.autograd.grad(ref, list(wide.values()), grad.double())
    for name, a, b in zip(names, grads, grads_ref):
        assert relative_error(a, b) < tolerance, name


def options(grouping: str, shape: VideoShape, feature: str, shifts: str, heads: int, d: int, runs: bool = True) -> dict:
    """The kernel's options; the shift table with a row per run of channels that share an offset
    (as the attention step passes it), or with ``runs=False`` a row per channel."""
    table = fused.shift_table(SHIFTS[shifts], heads * d)
    if table is not None and runs:
        table = fused.run_length_table(table, d)
    if table is not None:
        table = table.to(DEVICE)
    return dict(
        feature=feature, offset=d**-0.5 if feature == "relu" else 0.0, eps=EPS,
        layout=fused.group_layout(grouping, shape), grid=tuple(shape), shift=table,
    )


@pytest.mark.parametrize(
    "grouping, shape, heads, d, feature, shifts, gates",
    [
        ("frame", VideoShape(3, 3, 5), 2, 8, "relu", "temporal", 1),  # LVT's spatial step; d padded to 16
        ("tube", VideoShape(5, 2, 3), 2, 8, "elu", "spatial", 1),  # its temporal step
        ("joint", VideoShape(2, 3, 3), 2, 16, "sigmoid", "both", 1),  # both shifts composed
        ("frame", VideoShape(2, 1, 3), 1, 12, "relu", "none", 0),  # no fixation, no shift
        ("tube", VideoShape(67, 1, 2), 2, 8, "relu", "spatial", 1),  # a group of 67 tokens: two blocks
        # separate query and key gates (the official LVT configs' SHARE_GATE: False)
        ("tube", VideoShape(5, 2, 3), 2, 8, "relu", "spatial", 2),  # the official temporal step
        ("frame", VideoShape(3, 3, 5), 2, 12, "relu", "temporal", 2),  # the official spatial step; d padded
        ("joint", VideoShape(2, 3, 3), 1, 16, "elu", "both", 2),
    ],
)
def test_fused_step_matches_reference_forward_and_backward(grouping, shape, heads, d, feature, shifts, gates):
    qkv, gate = step_inputs(shape.num_patches + d, 2, shape, heads, d, gates)
    check_against_reference(qkv, gate, 1e-5, **options(grouping, shape, feature, shifts, heads, d))


def test_programs_that_take_several_groups_sum_the_gate_gradients(monkeypatch):
    """With fewer programs than groups, each program loops over groups (forward and backward)
    and the gate's partial gradients of all programs are summed."""
    from tubelet.kernels.linear_step import triton as kernels

    monkeypatch.setattr(kernels, "TARGET_PROGRAMS", 4)  # 2 heads: 2 programs per head for 6 groups
    shape = VideoShape(2, 2, 3)
    assert kernels._programs(2 * shape.spatial, 2, torch.device("cpu")) == 2  # on CUDA: twice the SMs
    for gates in (1, 2):
        qkv, gate = step_inputs(3, 2, shape, 2, 8, gates)
        check_against_reference(qkv, gate, 1e-5, **options("tube", shape, "relu", "spatial", 2, 8))


@pytest.mark.parametrize(
    "grouping, shape, heads, d, shifts, gates, chunks",
    [
        ("joint", VideoShape(2, 10, 10), 2, 8, "both", 2, 3),  # 200 members: chunks of 96, 96 and 8
        ("frame", VideoShape(2, 8, 17), 1, 16, "temporal", 1, 2),  # 136 per frame: 96 and 40
    ],
)
def test_key_pass_split_over_programs_matches_reference(grouping, shape, heads, d, shifts, gates, chunks):
    """``STEP_KEY_SPLIT`` auto: groups long enough are cut into chunks, each chunk's partial
    ``S, z`` (and backward ``dS, dz``) from its own program, summed; forward and gradients equal
    the reference as tightly as unsplit."""
    from tubelet.kernels.linear_step import triton as kernels

    qkv, gate = step_inputs(shape.num_patches + d, 2, shape, heads, d, gates)
    opts = options(grouping, shape, "relu", shifts, heads, d)
    groups, length = opts["layout"][:2]
    with STEP_KEY_SPLIT.using("auto"):
        assert kernels._split(2 * groups, heads, length, qkv.device)[0] == chunks
        check_against_reference(qkv, gate, 1e-5, **opts)
    assert kernels._split(2 * groups, heads, length, qkv.device) == (1, length)  # off: one program per group


@pytest.fixture
def dot_operands(request):
    """``STEP_DOT_OPERANDS`` set for one test, restored afterwards."""
    with STEP_DOT_OPERANDS.using(request.param):
        yield request.param


@pytest.mark.parametrize("dot_operands", STEP_DOT_OPERANDS.names, indirect=True)
@pytest.mark.parametrize("gates", [1, 2])
def test_bfloat16_inputs(gates, dot_operands):
    """bf16 in, bf16 out, within bf16's rounding of the float64 reference, with tf32 and with
    bf16 dot operands."""
    shape = VideoShape(3, 2, 3)
    qkv, gate = step_inputs(5, 2, shape, 2, 16, gates, dtype=torch.bfloat16)
    check_against_reference(qkv, gate, 2e-2, **options("frame", shape, "relu", "temporal", 2, 16))


def test_shift_table_reads_what_the_channel_shifts_move():
    """The composed table, gathered as the kernels load it, equals the model's shifts of
    ``[B, L, 2, C]`` applied in turn (temporal, then spatial), borders included."""
    shape = VideoShape(3, 4, 5)
    kv = torch.randn(2, shape.num_patches, 2, 32)
    for name in ("temporal", "spatial", "both"):
        expected = kv
        for shift in SHIFTS[name]:
            expected = shift(expected, shape)
        assert torch.equal(gather_shift(kv, fused.shift_table(SHIFTS[name], 32), tuple(shape)), expected), name


def test_run_length_table_keeps_each_run_of_channels_that_share_an_offset():
    """LVT base's tables (8 heads of 64): the temporal shift moves whole heads (runs of 64), the
    spatial one half heads (32); a table's runs never cross a head, and expanded they are the
    table again."""
    for shifts, d, run in (("temporal", 64, 64), ("spatial", 64, 32), ("both", 64, 32), ("spatial", 8, 4), ("spatial", 6, 1), ("temporal", 12, 4)):
        table = fused.shift_table(SHIFTS[shifts], 8 * d)
        runs = fused.run_length_table(table, d)
        assert runs.shape == (8 * d // run, 3), (shifts, d)
        assert torch.equal(runs.repeat_interleave(run, 0), table), (shifts, d)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_a_step_keeps_its_run_length_table_on_the_device_it_is_built_on(device):
    """Models are built under ``torch.device(...)``: on ``meta`` to count FLOPs and match
    checkpoints, on the GPU by the benchmarks (where a table left on the CPU is a copy each step,
    and breaks CUDA graph capture). LVT base's frame step has runs of 64 channels, its tube step 32."""
    with torch.device(device):
        model = tubelet.create_model("lvt_base_p16_16x224", num_classes=10, depth=1)
    steps = [m for m in model.modules() if isinstance(m, fused.LinearAttentionStep)]
    assert [(step.grouping.name, step.shift_table.shape, step.shift_table.device.type) for step in steps] == [
        ("frame", (512 // 64, 3), device), ("tube", (512 // 32, 3), device)]


@pytest.mark.parametrize("grouping, shifts", [("frame", "temporal"), ("tube", "spatial"), ("joint", "both")])
def test_run_length_and_per_channel_tables_give_the_same_numbers(grouping, shifts):
    """The vector loads of runs read what the per-channel loads read, forward and backward."""
    shape = VideoShape(3, 3, 4)
    qkv, gate = step_inputs(11, 2, shape, 2, 16, 1)
    results = []
    for runs in (True, False):
        opts = options(grouping, shape, "relu", shifts, 2, 16, runs=runs)
        assert (opts["shift"].shape[0] < 32) == runs
        out = triton_linear_step(qkv, **gate, **opts)
        results.append((out, *torch.autograd.grad(out.square().sum(), [qkv, *gate.values()])))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("split", STEP_KEY_SPLIT.names)
def test_an_empty_batch_gives_empty_outputs_and_zero_gate_gradients(split):
    shape = VideoShape(2, 8, 17)
    qkv, gate = step_inputs(2, 0, shape, 1, 16, 2)
    with STEP_KEY_SPLIT.using(split):
        out = triton_linear_step(qkv, **gate, **options("frame", shape, "relu", "temporal", 1, 16))
        assert out.shape == (0, shape.num_patches, 1, 16)
        grads = torch.autograd.grad(out.sum(), [qkv, *gate.values()])
    assert grads[0].shape == qkv.shape and all(torch.equal(g, torch.zeros_like(g)) for g in grads[1:])


def test_bad_inputs_are_refused():
    shape = VideoShape(2, 2, 2)
    qkv, gate = step_inputs(1, 1, shape, 2, 8, 2)
    weight, bias = gate["weight"], gate["bias"]
    good = options("frame", shape, "relu", "none", 2, 8)
    with pytest.raises(ValueError, match=r"weight \[8, 24\]"):
        triton_linear_step(qkv, weight[:, :16], bias, **good)
    with pytest.raises(ValueError, match=r"key fixation gate needs weight \[8, 24\] and bias \[8\]"):
        triton_linear_step(qkv, weight, bias, key_weight=gate["key_weight"], key_bias=None, **good)
    with pytest.raises(ValueError, match="needs the query gate"):
        triton_linear_step(qkv, None, None, key_weight=gate["key_weight"], key_bias=gate["key_bias"], **good)
    with pytest.raises(ValueError, match="groups of"):
        triton_linear_step(qkv, weight, bias, **{**good, "layout": (3, 4, 4, 1)})
    with pytest.raises(ValueError, match="unknown feature map 'exp'"):
        triton_linear_step(qkv, weight, bias, **{**good, "feature": "exp"})
    for rows in (3, 1, 32):  # runs of 16/3 channels, runs across heads (16 > d), more rows than channels
        with pytest.raises(ValueError, match=r"shift table must be \[16 / run, 3\] for a power of two run that divides the head width 8"):
            triton_linear_step(qkv, weight, bias, **{**good, "shift": torch.zeros(rows, 3, dtype=torch.int32)})
    with pytest.raises(ValueError, match=f"the shift table is on meta and qkv on {qkv.device}"):
        triton_linear_step(qkv, weight, bias, **{**good, "shift": torch.zeros(2, 3, dtype=torch.int32, device="meta")})


COMPILE_FOR_SM90 = """
import inspect, sys, torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tubelet.kernels.linear_step import STEP_DOT_OPERANDS, triton as kernels

STEP_DOT_OPERANDS.set(sys.argv[1])
SPLIT = sys.argv[2] == "auto"


def compile_for_sm90(fn, constants, launch):
    names = list(inspect.signature(fn.fn).parameters)
    def kind(name):
        if name in ("W", "Bias", "U", "UBias", "DW", "DB", "STATE", "DSTATE", "OUT"):
            return "*fp32"
        if name == "SHIFT":
            return "*i32"
        if name in ("offset", "eps"):
            return "fp64"  # as inductor types Python floats in kernels it compiles (the stricter case)
        return "*bf16" if name[0].isupper() else "i32"
    signature = {name: "constexpr" if name in constants else kind(name) for name in names}
    # As Triton's launcher specialises them at LVT base's sizes: pointers, strides, d and channels divisible by 16
    aligned = [n for n in names if n not in constants and (n[0].isupper() or n.startswith("s") or n in ("d", "channels"))]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    source = ASTSource(fn=fn, signature=signature, constexprs={(names.index(n),): v for n, v in constants.items()}, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=launch)

# (kernel, its constants, backward); the split's kernels with two gates, the most they hold
launches = [(kernels._forward_kernel, dict(SPLIT=True), False), (kernels._backward_kernel, dict(SPLIT=True), True),
            (kernels._state_kernel, dict(GRADS=False), False), (kernels._state_kernel, dict(GRADS=True), True)]
if not SPLIT:
    launches = [(fn, dict(SPLIT=False), backward) for fn, _, backward in launches[:2]]
for two_gates in (False, True) if not SPLIT else (True,):
    flags = dict(FEATURE=0, HAS_GATE=True, TWO_GATES=two_gates, SHIFT_RUN=32)  # LVT base's spatial shift: runs of 32 channels
    for fn, constants, backward in launches:
        config = kernels._config(64, 196, torch.bfloat16, backward=backward, two_gates=two_gates)
        launch = dict(num_warps=config.pop("num_warps"), num_stages=config.pop("num_stages"))
        compiled = compile_for_sm90(fn, {**flags, **constants, **config}, launch)
        scalar_loads = compiled.asm["ptx"].count("ld.global.b16")  # 16-bit token loads one element at a time
        print(f"{fn.fn.__name__}/{constants}/{two_gates}".replace(" ", ""), compiled.metadata.shared, len(compiled.asm["cubin"]), scalar_loads)
if not SPLIT:
    compiled = compile_for_sm90(kernels._unshift_kernel, dict(SHIFT_RUN=32, BLOCK_L=16, BLOCK_C=256), dict(num_warps=4))
    print("_unshift_kernel", compiled.metadata.shared, len(compiled.asm["cubin"]), compiled.asm["ptx"].count("ld.global.b16"))
"""


@pytest.mark.parametrize("operands, split", [("tf32", "off"), ("bf16", "off"), ("tf32", "auto")])
def test_kernels_compile_for_an_h200_without_one(tmp_path, operands, split):
    """The interpreter runs the kernels' Python, not Triton's compiler: compile them here for
    sm_90 (Triton's own ptxas, no GPU needed) at LVT base's configuration, bf16, and check that
    each fits the 227 KB of shared memory an H100/H200 program may use, with one fixation gate
    and with two, with each choice of dot operands, and the split key pass's kernels; and that
    with the shift in runs of 32 channels (LVT base's spatial shift) every 16-bit load of tokens is
    a vector load (each thread 8 channels at once), none element by element, the backward's
    unshift of dK and dV too."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    result = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90, operands, split], capture_output=True, text=True, env=env, timeout=120)
    if result.returncode and "ptxas" in result.stderr and "not found" in result.stderr.lower():
        pytest.skip(f"this triton has no ptxas to compile for CUDA: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert len(lines) == (4 if split == "auto" else 5), lines
    for name, numbers in lines.items():
        shared, cubin, scalar_loads = map(int, numbers.split())
        assert cubin > 0 and shared <= 227 * 1024, (name, shared)
        assert scalar_loads == 0, (name, scalar_loads)


class CountFused:
    """Counts the fused kernel's calls from the attention step."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = fused.triton_linear_step

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(fused, "triton_linear_step", counted)


@pytest.mark.parametrize(
    "model_options, fused_steps",
    [
        ({}, 2),  # the LVT default: frame and tube steps, both fused
        ({"attention_options": {"groupings": ("tube", "frame"), "variant": "elu"}}, 2),  # time first, ELU + 1
        # the official architecture (``tubelet convert --from lvt``) with the official configs' separate gates
        (official_arguments(temporal_shift_div=4, fixation_shared=False, patch_stride=6, mlp_dim=16), 2),
        ({"attention_options": {"fixation": "separate"}}, 0),  # Eq. 4: not covered, composed
        ({"attention_options": {"association_order": "after"}}, 0),  # not covered: composed, with the Eq. 3 kernel
        ({"class_token": True}, 0),  # prefix tokens: composed
    ],
)
def test_lvt_gives_the_same_outputs_and_gradients_with_torch_and_triton_backends(monkeypatch, model_options, fused_steps):
    """The whole tiny LVT: logits and every parameter's gradient agree between the backends,
    and the triton backend takes the fused path exactly where the step's configuration is covered."""
    counter = CountFused(monkeypatch)
    torch.manual_seed(0)
    model = tubelet.create_model(
        "lvt_tiny_p8_8x32", num_classes=5, depth=1, num_frames=2, img_size=16, **model_options,
    ).to(DEVICE)
    video = torch.randn(2, 3, 2, 16, 16, device=DEVICE)
    results = {}
    for backend in ("torch", "triton"):
        functional.set_backend(backend)
        try:
            counter.calls = 0
            model.zero_grad()
            logits = model(video)
            logits.square().sum().backward()
            results[backend] = [logits.detach()] + [p.grad.clone() for p in model.parameters()]
        finally:
            functional.set_backend("torch")
    assert counter.calls == fused_steps
    names = ["logits"] + [name for name, _ in model.named_parameters()]
    for name, a, b in zip(names, results["triton"], results["torch"]):
        assert relative_error(a, b) < 1e-5, name


def test_training_with_feature_dropout_takes_the_composed_path(monkeypatch):
    counter = CountFused(monkeypatch)
    model = tubelet.create_model("lvt_tiny_p8_8x32", num_classes=5, depth=1, num_frames=2, img_size=16, attn_drop_rate=0.1)
    step = model.blocks[0].attn.steps[0]
    x = torch.randn(1, 8, 64)
    shape = VideoShape(2, 2, 2)
    functional.set_backend("triton")
    try:
        assert step.fusable
        step.train()
        assert not step.uses_fused_kernel(x, shape)
        step.eval()
        assert step.uses_fused_kernel(x, shape)
    finally:
        functional.set_backend("torch")
    assert counter.calls == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: on CPU the interpreter tests above run instead")
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize(
    "grouping, shifts",
    [("frame", "temporal"), ("tube", "spatial"), ("joint", "both")],  # LVT base's two steps, and joint
)
@pytest.mark.parametrize("gates", [1, 2])
def test_fused_step_matches_reference_on_gpu_at_real_sizes(dtype, tolerance, grouping, shifts, gates):
    shape = VideoShape(16, 14, 14)  # 16 x 224 at patch 16; 8 heads of 64
    qkv, gate = step_inputs(7, 2, shape, 8, 64, gates, dtype=dtype, device="cuda")
    check_against_reference(qkv, gate, tolerance, **options(grouping, shape, "relu", shifts, 8, 64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: on CPU the interpreter tests above run instead")
@pytest.mark.parametrize(
    "dtype, tolerance, dot, split",
    [(torch.bfloat16, 2e-2, "bf16", "off"), (torch.bfloat16, 2e-2, "tf32", "auto"), (torch.bfloat16, 2e-2, "bf16", "auto"),
     (torch.float32, 1e-5, "tf32", "auto")],
)
@pytest.mark.parametrize("grouping, shifts", [("frame", "temporal"), ("tube", "spatial"), ("joint", "both")])
@pytest.mark.parametrize("gates", [1, 2])
def test_fused_step_variants_match_reference_on_gpu_at_real_sizes(dtype, tolerance, dot, split, grouping, shifts, gates):
    """Each ``STEP_DOT_OPERANDS`` x ``STEP_KEY_SPLIT`` variant the ``step`` benchmark compares, at
    LVT base's sizes, batch 1 (split on an H200's 132 SMs: frame steps in 2 chunks, joint in 33;
    tube steps are not split)."""
    shape = VideoShape(16, 14, 14)
    qkv, gate = step_inputs(13, 1, shape, 8, 64, gates, dtype=dtype, device="cuda")
    with STEP_DOT_OPERANDS.using(dot), STEP_KEY_SPLIT.using(split):
        check_against_reference(qkv, gate, tolerance, **options(grouping, shape, "relu", shifts, 8, 64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: on CPU the interpreter tests above run instead")
@pytest.mark.parametrize("frames", [64, 96])
def test_long_tube_steps_match_reference_on_gpu(frames):
    """LVT base's tube step over 64 and 96 frames (forward blocks of 64, and of 32 for the short
    groups' rule), bf16, one gate, at 112 px (49 positions) to keep the float64 reference small."""
    shape = VideoShape(frames, 7, 7)
    qkv, gate = step_inputs(frames, 1, shape, 8, 64, 1, dtype=torch.bfloat16, device="cuda")
    check_against_reference(qkv, gate, 2e-2, **options("tube", shape, "relu", "spatial", 8, 64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backward", [False, True])
def test_the_launch_configuration_traces_in_one_graph(dtype, backward):
    """The host code that picks a launch is traced by ``torch.compile`` (the GPU test below
    compiles the whole step); reading Triton's environment there broke the graph."""

    def warps(x):
        return x * step_kernels._config(64, 196, dtype, backward=backward, two_gates=False)["num_warps"]

    torch._dynamo.reset()
    assert torch.equal(torch.compile(warps, backend="eager", fullgraph=True)(torch.ones(2)), warps(torch.ones(2)))


def check_compiled_step(shape: VideoShape, heads: int, d: int, device: str, backend: str) -> None:
    """``torch.compile(fullgraph=True)`` (which fails on any graph break around the kernels) of a
    frame step with the temporal shift and one gate gives eager's outputs and gradients and leaves
    its input unwritten."""
    qkv, gate = step_inputs(11, 1, shape, heads, d, 1, dtype=torch.bfloat16, device=device)
    weight, bias = gate["weight"], gate["bias"]
    opts = options("frame", shape, "relu", "temporal", heads, d)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b, c: triton_linear_step(a, b, c, **opts), fullgraph=True, backend=backend)
    version = qkv._version
    out = compiled(qkv, weight, bias)
    eager = triton_linear_step(qkv, weight, bias, **opts)
    assert relative_error(out, eager) < 1e-3
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (qkv, weight, bias), grad), torch.autograd.grad(eager, (qkv, weight, bias), grad)):
        assert relative_error(a, b) < 1e-3
    assert qkv._version == version, "the compiled step wrote into its input"


@pytest.mark.parametrize("split", STEP_KEY_SPLIT.names)
def test_fused_step_compiles_in_one_graph_through_the_interpreter(split):
    """The step is a custom operator that torch.compile calls without tracing its kernels (the
    interpreter's kernels too); tracing them, torch.compile once wrote into qkv and its gradients
    were wrong. ``aot_eager`` builds the same forward and backward graphs as inductor."""
    with STEP_KEY_SPLIT.using(split):
        check_compiled_step(VideoShape(4, 3, 5), 2, 16, DEVICE, "aot_eager")


def test_lvt_with_the_fused_steps_compiles_in_one_graph():
    """The tiny LVT on the triton backend (both steps fused) under ``torch.compile(fullgraph=True)``
    with ``aot_eager``, which traces forward and backward with the operators' shape functions:
    eager's logits and every parameter's gradient."""
    torch.manual_seed(0)
    model = tubelet.create_model("lvt_tiny_p8_8x32", num_classes=5, depth=1, num_frames=2, img_size=16).to(DEVICE)
    video = torch.randn(2, 3, 2, 16, 16, device=DEVICE)
    functional.set_backend("triton")
    try:
        torch._dynamo.reset()
        results = []
        for run in (torch.compile(model, fullgraph=True, backend="aot_eager"), model):
            model.zero_grad()
            logits = run(video)
            logits.square().sum().backward()
            results.append([logits.detach()] + [p.grad.clone() for p in model.parameters()])
    finally:
        functional.set_backend("torch")
    names = ["logits"] + [name for name, _ in model.named_parameters()]
    for name, compiled, eager in zip(names, *results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: inductor compiles the graph around the kernels for it")
@pytest.mark.parametrize("split", STEP_KEY_SPLIT.names)
def test_fused_step_compiles_in_one_graph_forward_and_backward(split):
    """As above under inductor at LVT base's sizes (batch 1, so the frame step splits with ``auto``)."""
    with STEP_KEY_SPLIT.using(split):
        check_compiled_step(VideoShape(16, 14, 14), 8, 64, "cuda", "inductor")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: on CPU the tiny model runs through the interpreter above")
@pytest.mark.parametrize("model_options", [{}, official_arguments(temporal_shift_div=4, fixation_shared=False)], ids=["base", "official"])
def test_lvt_base_agrees_between_backends_on_gpu(model_options):
    """LVT base at 16x224 (two of its layers), and the official architecture with separate gates,
    training mode: in float32 the fused triton path gives the composed torch path's logits and
    gradients; under bf16 autocast it is at least about as close to float32 as the composed path is."""
    torch.manual_seed(0)
    model = tubelet.create_model("lvt_base_p16_16x224", num_classes=10, depth=2, **model_options).cuda()
    video = torch.randn(2, 3, 16, 224, 224, device="cuda")

    def run(backend: str, autocast: bool) -> list[torch.Tensor]:
        functional.set_backend(backend)
        try:
            model.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits = model(video)
            logits.float().square().sum().backward()
            return [logits.detach().float()] + [p.grad.clone() for p in model.parameters()]
        finally:
            functional.set_backend("torch")

    names = ["logits"] + [name for name, _ in model.named_parameters()]
    exact = run("torch", autocast=False)
    for name, a, b in zip(names, run("triton", autocast=False), exact):
        assert relative_error(a, b) < 1e-4, name
    composed, fused_bf16 = run("torch", autocast=True), run("triton", autocast=True)
    for name, a, b, c in zip(names, fused_bf16, composed, exact):
        assert relative_error(a, c) <= 2 * relative_error(b, c) + 1e-3, name


def test_short_groups_take_the_forward_block_that_pads_least():
    """With bf16 operands and one gate: the tube step's 96 frames in three blocks of 32 (not two of
    64), 64 frames in one of 64, the frame step's long groups in blocks of 64; backward unchanged."""
    from tubelet.kernels.linear_step import triton as kernels

    def block(length, backward=False):
        with STEP_DOT_OPERANDS.using("bf16"):
            return kernels._config(64, length, torch.bfloat16, backward=backward, two_gates=False)["BLOCK_L"]

    assert [block(n) for n in (16, 32, 48, 64, 96, 128, 196, 784)] == [16, 32, 64, 64, 32, 64, 64, 64]
    assert block(96, backward=True) == 16
