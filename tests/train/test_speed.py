"""CPU bf16 where the CPU has it, and the cached frozen-feature path of the linear probe."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import assert_refused, make_tiny_model, run_cli, write_suite
from harness.spec.cell import Cell
from harness.store.db import Store
from harness.spec.tasks import get_task
from harness import cpuinfo
from harness.train import features, precision
from harness.train.context import RunContext
from harness.train.recipe import train_and_evaluate
from harness.spec.methods import get_method
from harness.train.methods import set_up

X86_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
X86_AVX512_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni\n"
X86_AMX = "flags\t\t: avx512f amx_tile amx_bf16 amx_int8\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 i8mm\n"
ARM_OLD = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
# a real /proc/cpuinfo (a few lines left out, the second processor cut short) of a two-vCPU AMD EPYC (Zen 4)
# virtual machine: avx512_bf16 is on its flags line, so it has native bf16
AMD_EPYC_ZEN4 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
cpu MHz\t\t: 2596.128
cache size\t: 1024 KB
siblings\t: 2
cpu cores\t: 2
fpu\t\t: yes
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid \
tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx \
f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext vmmcall \
fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb \
avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero xsaveerptr arat avx512vbmi umip \
avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm
bugs\t\t: sysret_ss_attrs null_seg spectre_v1 spectre_v2 spec_store_bypass srso spectre_v2_user
bogomips\t: 5192.25
clflush size\t: 64
address sizes\t: 48 bits physical, 48 bits virtual
power management:

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16
"""
# the same text without the flag: AVX-512 without its bf16 extension (as on Skylake-SP or Cascade Lake)
AMD_WITHOUT_BF16 = AMD_EPYC_ZEN4.replace(" avx512_bf16", "")
# Arm server Features lines in the form Linux prints them: Neoverse V1 (bf16) and Neoverse N1 (no bf16)
ARM_NEOVERSE_V1 = ("processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
                   "atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm "
                   "dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng\n"
                   "CPU implementer\t: 0x41\nCPU part\t: 0xd40\n")
ARM_NEOVERSE_N1 = ("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
                   "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\n"
                   "CPU part\t: 0xd0c\n")
# lines that are not the flag list do not count, and a flag is a whole word
SVE_BF16_ONLY = "Features\t: fp asimd sve svebf16\n"               # SVE's bf16, not the BF16 extension's flag
VMX_FLAGS_ONLY = "flags\t\t: fpu sse2 avx2\nvmx flags\t: vnmi amx_bf16\n"   # a line named "vmx flags"
IN_MODEL_NAME = "model name\t: Imaginary avx512_bf16 bf16 CPU\nflags\t\t: fpu sse2\n"


@pytest.mark.parametrize("text,native", [
    (X86_BF16, True), (X86_AVX512_ONLY, False), (X86_AMX, True), (ARM_BF16, True), (ARM_OLD, False), ("", False),
    (AMD_EPYC_ZEN4, True), (AMD_WITHOUT_BF16, False), (ARM_NEOVERSE_V1, True), (ARM_NEOVERSE_N1, False),
    (SVE_BF16_ONLY, False), (VMX_FLAGS_ONLY, False), (IN_MODEL_NAME, False),
], ids=["x86-bf16", "x86-avx512-only", "x86-amx", "arm-bf16", "arm-old", "empty", "amd-epyc-zen4",
        "amd-without-bf16", "neoverse-v1", "neoverse-n1", "sve-bf16-only", "vmx-flags-only", "in-model-name"])
def test_native_bf16_is_read_from_the_cpu_flags(text, native):
    assert cpuinfo.has_bf16(cpuinfo.flags(text)) is native


def test_cpu_flags_are_the_words_of_the_flags_and_features_lines():
    text = "processor\t: 0\nflags\t\t: fpu  sse2\nvmx flags\t: vnmi\nFeatures\t: asimd\nmodel name\t: x y\n"
    assert cpuinfo.flags(text) == {"fpu", "sse2", "asimd"}
    assert cpuinfo.flags("flags\t\t:\n") == set()


@pytest.mark.parametrize("text,named", [
    (AMD_EPYC_ZEN4, "AMD EPYC (AVX512-BF16) x2"), (AMD_WITHOUT_BF16, "AMD EPYC (AVX512) x2"),
    (AMD_EPYC_ZEN4.replace(" avx512f", "").replace(" avx512_bf16", ""), "AMD EPYC (AVX2) x2"),
    (X86_AMX.replace("flags", "model name\t: Xeon\nflags"), "Xeon (AMX-BF16) x2"),
], ids=["zen4", "avx512", "avx2", "amx"])
def test_a_cpu_is_named_with_its_instruction_set_level(text, named):
    """Two machines a VM names alike ("AMD EPYC": a Zen 4 and a Zen 1) are two devices to the estimates: the
    name every result carries says the highest instruction set that decides torch's kernels."""
    assert cpuinfo.describe(text, cores=2) == named


@pytest.mark.parametrize("text,native,named", [(AMD_EPYC_ZEN4, True, "AMD EPYC (AVX512-BF16)"),
                                               (ARM_NEOVERSE_N1, False, None), (None, False, None)],
                         ids=["amd-epyc-zen4", "neoverse-n1", "unreadable"])
def test_the_machine_is_detected_from_proc_cpuinfo(monkeypatch, tmp_path, text, native, named):
    """cpu_has_native_bf16 and the device name a result carries read /proc/cpuinfo (here: a file put in its
    place); where it cannot be read, fp32 and platform's name. (Neoverse N1's file has no model name either.)"""
    import platform

    from harness.store.env import device_name

    real_open, fake = open, tmp_path / "cpuinfo"
    if text is not None:
        fake.write_text(text)

    def fake_open(path, *args, **kwargs):
        if path != "/proc/cpuinfo":
            return real_open(path, *args, **kwargs)
        if text is None:
            raise PermissionError(13, "Permission denied", path)
        return real_open(fake, *args, **kwargs)

    monkeypatch.setattr(cpuinfo, "open", fake_open, raising=False)
    cpuinfo.text.cache_clear()
    try:
        assert precision.cpu_has_native_bf16() is native
        if not torch.cuda.is_available():
            named = named or platform.processor() or platform.machine()
            assert device_name() == f"CPU: {named} x{os.cpu_count()}"
    finally:
        cpuinfo.text.cache_clear()   # the next caller reads this machine again


def test_auto_resolves_per_the_detected_capability(monkeypatch):
    # without the instructions: fp32, nothing measured; with them `auto` measures (tests/train/test_precision_measured.py)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", cuda=False) == "no"
    for explicit in ("no", "bf16"):
        assert precision.resolve_precision(explicit, cuda=False) == explicit
    assert precision.resolve_precision("fp16", cuda=False) == "no"   # Accelerate autocasts fp16 on GPUs only


def _cell(model, task="rte", method="full", hparams=None, budget=None, seed=1, method_params=None):
    hp = dict(learning_rate=1e-3, batch_size=8, eval_batch_size=16, max_length=32, warmup_ratio=0.0,
              weight_decay=0.0, gradient_accumulation_steps=1, max_grad_norm=1.0, mixed_precision="no",
              padding="dynamic", group_by_length=True, eval_steps=None)
    hp.update(hparams or {})
    m = get_method(method)
    return Cell(suite="t", model=str(model), task=task, task_version=get_task(task).version, method=method,
                method_params=m.resolve(method_params or {}), budget=budget or {"epochs": 1.0}, seed=seed,
                hparams=hp)


def test_bf16_autocasts_the_forward_and_keeps_fp32_master_weights(tiny_bert, small_glue, monkeypatch):
    from transformers import BertForSequenceClassification

    seen = []
    real_forward = BertForSequenceClassification.forward

    def spy(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        seen.append((torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None,
                     {p.dtype for p in self.parameters()}))
        return out

    monkeypatch.setattr(BertForSequenceClassification, "forward", spy)
    ctx = RunContext(str(small_glue), None, show_progress=False)
    result = train_and_evaluate(_cell(tiny_bert, hparams={"mixed_precision": "bf16"}), ctx)
    assert result.mixed_precision == "bf16"
    assert seen and all(dtype == torch.bfloat16 for dtype, _ in seen)      # every forward ran under bf16 autocast
    assert all(dtypes == {torch.float32} for _, dtypes in seen)            # the weights stayed fp32
    seen.clear()
    cell = _cell(tiny_bert, hparams={"mixed_precision": "auto"})
    result = train_and_evaluate(cell, ctx)
    # what this process measured for the cell (cached in-process: read again, not re-timed): a training step of
    # its model decides where it could be timed, else the matmul, so the matmul alone can disagree (it did once on
    # an AVX512-BF16 CPU beside another test process: bf16 matmuls faster at the tiny model's shape, its step not)
    choice = precision.choose_precision("auto", shape=precision.cell_shape(cell), step=precision.model_step(cell))
    expected = choice["chosen"]
    assert result.mixed_precision == expected and result.precision_choice["chosen"] == expected
    assert all(dtype == (torch.bfloat16 if expected == "bf16" else None) for dtype, _ in seen)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "albert"])
@pytest.mark.parametrize("task_name", ["stsb", "rte", "squad"])
def test_the_head_runs_outside_autocast(tmp_path, arch, task_name):
    """Under bf16 autocast only the encoder computes in bf16: a regression output near 2.5 in bf16 moves in
    steps of 1/64, which made a half-trained STS-B model's dev predictions constant (Pearson 0.00). Each head
    module returns fp32, exactly what its own forward computes in fp32 on the (bf16) input it was given."""
    from harness.spec.models import ModelSpec
    from harness.train.models import load_for_task

    task = get_task(task_name)
    tokenizer, model, _ = load_for_task(ModelSpec(str(make_tiny_model(tmp_path / arch, arch))), task)
    model.eval()
    batch = dict(tokenizer(["the cat sat on the mat", "a dog"], ["a cat", "the dog ran"], padding=True,
                           return_tensors="pt"))
    name = "start_logits" if task_name == "squad" else "logits"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert getattr(model(**batch), name).dtype == torch.bfloat16   # what a plain autocast gives
    heads = precision.head_outside_autocast(model)
    assert heads and model.base_model_prefix not in heads
    assert precision.head_outside_autocast(model) == []          # once only
    seen = []
    for head in heads:
        module = getattr(model, head)
        module.register_forward_hook(lambda m, args, out: seen.append((m, args, out)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert getattr(out, name).dtype == torch.float32
    assert {id(m) for m, _, _ in seen} == {id(getattr(model, h)) for h in heads}
    for module, args, got in seen:
        with torch.no_grad():
            expected = type(module).forward(module, *(a.float() for a in args))
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    copy = __import__("copy").deepcopy(model)                    # a deep copy runs its own head, not ours
    assert all(getattr(copy, h).forward.__self__ is getattr(copy, h) for h in heads)


def test_a_bf16_run_records_its_head_in_fp32(tiny_bert, small_glue):
    ctx = RunContext(str(small_glue), None, show_progress=False)
    result = train_and_evaluate(_cell(tiny_bert, task="stsb", hparams={"mixed_precision": "bf16"}), ctx)
    assert result.head_outside_autocast == ["classifier"]
    assert result.mixed_precision == "bf16"
    result = train_and_evaluate(_cell(tiny_bert, task="stsb"), ctx)
    assert result.head_outside_autocast is None                    # fp32 runs: nothing to record


def _probe_model(path, task):
    from harness.spec.models import ModelSpec
    from harness.train.models import load_for_task

    tokenizer, model, _ = load_for_task(ModelSpec(str(path)), task)
    set_up(model, "linear_probe", {})
    return tokenizer, model.eval()


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "albert"])
def test_cached_cls_features_give_the_uncached_logits(tmp_path, arch):
    """At init, the head on cached first-token features scores exactly what the whole model scores."""
    from transformers import DataCollatorWithPadding

    task = get_task("rte")
    path = make_tiny_model(tmp_path / arch, arch)
    tokenizer, model = _probe_model(path, task)
    texts = (["the cat sat on the mat", "a dog", "big red house under a small blue mat quickly"],
             ["a cat", "the dog ran slowly on the big mat", "house"])
    batch = dict(tokenizer(*texts, padding=True, return_tensors="pt"))
    with torch.no_grad():
        expected = model(**batch).logits
    ds = _tokenized(tokenizer, texts)
    feats = features.encode(getattr(model, model.base_model_prefix), ds, DataCollatorWithPadding(tokenizer), 2,
                            "cls", _no_autocast, "cpu")
    encoder = getattr(model, model.base_model_prefix)
    setattr(model, model.base_model_prefix, features.CachedEncoder(encoder, "cls"))
    with torch.no_grad():
        got = model(inputs_embeds=torch.from_numpy(feats)).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_cached_mean_features_are_the_masked_mean(tmp_path):
    """`mean` pooling: the head reads the attention-masked mean of the last layer, padding excluded."""
    from transformers import DataCollatorWithPadding

    task = get_task("rte")
    path = make_tiny_model(tmp_path / "bert", "bert")
    tokenizer, model = _probe_model(path, task)
    texts = (["the cat sat on the mat", "a dog"], ["a cat", "the dog ran slowly on the big mat under a house"])
    encoder = getattr(model, model.base_model_prefix)
    feats = features.encode(encoder, _tokenized(tokenizer, texts), DataCollatorWithPadding(tokenizer), 2, "mean",
                            _no_autocast, "cpu")
    for i in range(2):   # each example alone: no padding at all
        single = dict(tokenizer(texts[0][i], texts[1][i], return_tensors="pt"))
        with torch.no_grad():
            mean = encoder(**single).last_hidden_state[0].mean(0)
        torch.testing.assert_close(torch.from_numpy(feats[i]), mean, rtol=1e-4, atol=1e-5)
    setattr(model, model.base_model_prefix, features.CachedEncoder(encoder, "mean"))
    with torch.no_grad():
        got = model(inputs_embeds=torch.from_numpy(feats)).logits
    torch.testing.assert_close(got, model.classifier(torch.from_numpy(feats)))   # no pooler in between


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def _tokenized(tokenizer, texts):
    import datasets

    enc = tokenizer(*texts, truncation=True, max_length=64)
    data = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
    data.update(length=[len(x) for x in enc["input_ids"]], labels=[0] * len(texts[0]), idx=list(range(len(texts[0]))))
    return datasets.Dataset.from_dict(data)


def test_cached_probe_trains_like_the_uncached_loop(tmp_path, small_glue, monkeypatch):
    """Without dropout, the cached path and the plain path are the same training: same batches, same steps,
    same losses and dev scores (to float rounding), and the cached one records what it did."""
    path = make_tiny_model(tmp_path / "nodrop", "bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cell = _cell(path, task="stsb", method="linear_probe", budget={"epochs": 3.0}, hparams={"learning_rate": 1e-2})
    cached = train_and_evaluate(cell, RunContext(str(small_glue), str(tmp_path / "cache"), show_progress=False))
    monkeypatch.setattr(features, "plan", lambda *a, **k: None)
    plain = train_and_evaluate(cell, RunContext(str(small_glue), None, show_progress=False))
    assert plain.frozen_features is None
    ff = cached.frozen_features
    assert ff["pooling"] == "cls" and ff["splits_computed"] == 2 and ff["splits_cached"] == 0
    assert cached.steps == plain.steps == 3 * 6 and cached.epochs_done == plain.epochs_done == 3
    assert cached.train_examples == plain.train_examples and cached.eval_examples == plain.eval_examples
    for a, b in zip(cached.history, plain.history):
        assert a["step"] == b["step"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)
    assert cached.train_tokens_per_s / cached.train_examples_per_s == pytest.approx(
        plain.train_tokens_per_s / plain.train_examples_per_s)   # tokens counted as the encoder read them
    assert cached.trainable_params == plain.trainable_params and cached.total_params == plain.total_params


def test_default_pooling_keeps_the_old_key(tiny_bert):
    old = _cell(tiny_bert, method="linear_probe")
    assert old.method_params == {"pooling": None}
    assert old.key == Cell(**{**old.__dict__, "method_params": {}}).key   # the key before pooling existed
    mean = _cell(tiny_bert, method="linear_probe", method_params={"pooling": "mean"})
    assert mean.key != old.key and mean.method_label == "linear_probe(pooling=mean)"


def test_probe_suite_caches_features_on_disk_and_refuses_mean_where_it_cannot(tmp_path, tiny_bert, small_glue):
    def suite(name, seeds, tasks="[rte]"):
        return write_suite(tmp_path / f"{name}.yaml", f"""
name: {name}
models: ["{tiny_bert}"]
tasks: {tasks}
methods:
  - {{name: linear_probe, pooling: [cls, mean]}}
budgets:
  - {{epochs: 4}}
seeds: {seeds}
hparams: {{batch_size: 8, learning_rate: 1e-2, mixed_precision: auto}}
""")

    db = f"sqlite:///{tmp_path / 'h.db'}"
    args = ("--db", db, "--output-dir", tmp_path / "out", "--data-dir", small_glue, "--no-progress")
    first = run_cli("run", suite("a", "[1]"), *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli("run", suite("b", "[2]"), *args, cwd=tmp_path)   # a new process: only the disk cache is shared
    assert again.returncode == 0, again.stderr
    runs = {(r.suite, r.method_label): r for r in Store(db).records()}
    for pooling in ("cls", "mean"):
        a, b = runs[("a", f"linear_probe(pooling={pooling})")], runs[("b", f"linear_probe(pooling={pooling})")]
        assert a.extra["frozen_features"]["splits_computed"] == 2
        assert b.extra["frozen_features"] == {**b.extra["frozen_features"], "splits_computed": 0, "splits_cached": 2}
        # `auto` is decided by measurement, per cell shape and step (its record says what was measured and chosen)
        choice = a.extra["precision_choice"]
        assert a.epochs_done == 4 and choice["requested"] == "auto"
        assert a.env["mixed_precision"] == choice["chosen"] in ("no", "bf16")
        assert a.train_time_s >= a.extra["frozen_features"]["extract_s"] > 0
    assert len(list((tmp_path / "out" / "cache" / "features").glob("*.npy"))) == 4   # 2 poolings x train, dev
    # a multi-task cell shares a live encoder: mean pooling has no cached path there; refused before training
    bad = run_cli("run", suite("c", "[1]", tasks="[{multitask: [rte, stsb]}]"), *args, cwd=tmp_path)
    assert_refused(bad, "methods[0].pooling: pooling mean needs cached frozen features")


def test_only_frozen_encoder_methods_on_pooled_heads_take_the_cached_path(tiny_bert):
    from harness.spec.methods import methods_with
    from harness.tasks.kinds import KINDS
    from harness.spec.models import ModelSpec
    from harness.train.models import load_for_task

    assert methods_with("frozen_encoder") == ("linear_probe",)
    _, model, _ = load_for_task(ModelSpec(str(tiny_bert)), get_task("rte"))
    set_up(model, "linear_probe", {})
    probe, mean = _cell(tiny_bert, method="linear_probe"), _cell(tiny_bert, method="linear_probe",
                                                                 method_params={"pooling": "mean"})
    pooled, spans = KINDS.get("classification"), KINDS.get("span_extraction")
    assert features.plan(probe, get_method("linear_probe"), [pooled], model, True, None).pooling == "cls"
    assert features.plan(mean, get_method("linear_probe"), [pooled], model, True, None).pooling == "mean"
    assert features.plan(probe, get_method("linear_probe"), [spans], model, True, None) is None  # e.g. SQuAD
    assert features.plan(probe, get_method("linear_probe"), [pooled], model, False, None) is None
    with pytest.raises(ValueError, match="pooling mean needs cached frozen features"):
        features.plan(mean, get_method("linear_probe"), [spans], model, True, None)
    model.bert.pooler.dense.weight.requires_grad = True       # an encoder weight trains: the plain path
    assert features.plan(probe, get_method("linear_probe"), [pooled], model, True, None) is None


def test_a_cpu_run_with_fewer_threads_than_cores_is_warned_about(monkeypatch):
    """`accelerate launch` without --num_cpu_threads_per_process sets OMP_NUM_THREADS=1: on this 2-core machine
    the README's main job trained on one core, and its CPU scores differ from a 2-thread run of the same cell."""
    from harness.store import env

    import psutil

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("LOCAL_WORLD_SIZE", "SLURM_CPUS_PER_TASK", env.ENV_THREADS_SET):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        line = env.cpu_threads_warning(1)
        assert "1 thread(s)" in line and "--num_cpu_threads_per_process 4" in line
        assert env.cpu_threads_warning(4) is None                  # 4 processes x 1 thread: the machine is used
        assert "--num_cpu_threads_per_process 2" in env.cpu_threads_warning(2)
        torch.set_num_threads(4)
        assert env.cpu_threads_warning(1) is None
        assert env.environment()["torch_threads"] == 4
        monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 2 if not logical else 4)   # hyperthreads
        torch.set_num_threads(2)
        assert env.cpu_threads_warning(1) is None
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        torch.set_num_threads(1)
        assert env.cpu_threads_warning(1) is None                  # the job's share is one CPU
    finally:
        torch.set_num_threads(before)


def _ops(step) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return {e.key for e in prof.key_averages()}


def test_cpu_bf16_training_forward_takes_the_math_kernel():
    """torch's CPU flash kernel is slow backward in bf16 (bench/RESULTS.md, 2026-12-03 night): a training step's
    attention on a CPU in bf16 runs SDPA's math kernel; in fp32 torch's own choice (the flash kernel) stays."""
    from harness.train.models import training_forward

    q, k, v = (torch.randn(2, 2, 8, 4, requires_grad=True) for _ in range(3))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.scaled_dot_product_attention(q, k, v).float().sum().backward()

    def flash(ops):
        return any("flash_attention" in op for op in ops)

    assert flash(_ops(step))                       # torch's default on a CPU
    with training_forward("cpu", "bf16"):
        ops = _ops(step)
    assert not flash(ops) and {"aten::bmm", "aten::_softmax"} <= ops
    with training_forward("cpu", "no"):
        assert flash(_ops(step))
    assert flash(_ops(step))                       # nothing left switched off after the step
    with pytest.raises(RuntimeError), training_forward("cpu", "bf16"):
        raise RuntimeError("a step that fails")
    assert torch.backends.cuda.flash_sdp_enabled() and flash(_ops(step))   # nor after a failed one


@pytest.mark.parametrize("mixed_precision,flash_in_training", [("bf16", False), ("no", True)])
def test_the_loop_trains_cpu_bf16_attention_on_the_math_kernel(tiny_bert, small_glue, monkeypatch, mixed_precision,
                                                              flash_in_training):
    """Through the loop: every training forward's attention sees the flash kernel switched off in bf16 (on in
    fp32); evaluation keeps it either way."""
    real = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(*args, **kwargs):
        calls.append((torch.is_grad_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ctx = RunContext(str(small_glue), None, show_progress=False)
    result = train_and_evaluate(_cell(tiny_bert, hparams={"mixed_precision": mixed_precision},
                                      budget={"max_steps": 3}), ctx)
    assert result.mixed_precision == mixed_precision and result.attn_implementation == "sdpa"
    training = [flash for grad, flash in calls if grad]
    evaluation = [flash for grad, flash in calls if not grad]
    assert training and evaluation
    assert set(training) == {flash_in_training} and set(evaluation) == {True}
