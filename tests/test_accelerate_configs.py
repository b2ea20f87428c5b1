"""The accelerate configs in configs/accelerate/ and the DeepSpeed JSONs they name parse with
accelerate's own loader, launch what their file names say, and keep the rules alignkit imposes on
DeepSpeed configs (batch geometry and clipping "auto", no optimizer or scheduler section).

Fast: nothing is launched. The DeepSpeedPlugin check needs deepspeed installed and is skipped
without it (checked with find_spec: importing deepspeed itself would take seconds)."""

from __future__ import annotations

import json
import re
from importlib.util import find_spec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ACCELERATE_DIR = REPO / "configs" / "accelerate"
DEEPSPEED_DIR = REPO / "configs" / "deepspeed"
YAMLS = sorted(ACCELERATE_DIR.glob("*.yaml"))
JSONS = sorted(DEEPSPEED_DIR.glob("*.json"))

# alignkit fills these from the stage config ("auto") and refuses a file that disagrees.
AUTO_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping", "train_batch_size")
# With a deepspeed_config_file, accelerate refuses these in the accelerate config (at Accelerator
# start, in every worker): they belong in the JSON. See DeepSpeedPlugin._deepspeed_config_checks.
REFUSED_WITH_DS_FILE = ("gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
                        "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path",
                        "zero3_save_16bit_model")
# ZeRO-3 bucket sizes accelerate fills from the model's hidden size.
ZERO3_AUTO = ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")


def expected(name: str) -> dict:
    """What a config's file name promises: processes, machines, engine, DeepSpeed JSON, CPU."""
    m = re.fullmatch(r"(1gpu|8gpu|cpu-2proc|multinode)(?:-(ddp|fsdp|zero[123]))?", name)
    assert m, f"configs/accelerate/{name}.yaml: file name does not say what it launches; teach this test"
    where, engine = m.groups()
    procs, machines = {"1gpu": (1, 1), "8gpu": (8, 1), "cpu-2proc": (2, 1), "multinode": (16, 2)}[where]
    if engine is None:
        assert where == "1gpu", name
        kind = "NO"
    elif engine == "ddp":
        # MULTI_GPU also on CPU: accelerate launch starts several workers (torchrun) for MULTI_GPU,
        # but only one for MULTI_CPU without an mpirun hostfile. alignkit picks gloo in the workers.
        kind = "MULTI_GPU"
    elif engine == "fsdp":
        kind = "FSDP"
    else:
        kind = "DEEPSPEED"
    return {"type": kind, "procs": procs, "machines": machines, "cpu": where == "cpu-2proc",
            "ds_json": f"configs/deepspeed/{engine}.json" if kind == "DEEPSPEED" else None}


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_expected_files_exist():
    names = {p.stem for p in YAMLS}
    assert {"1gpu", "8gpu-ddp", "8gpu-zero1", "8gpu-zero2", "8gpu-zero3", "8gpu-fsdp", "multinode-zero3",
            "cpu-2proc-ddp", "cpu-2proc-zero2", "cpu-2proc-zero3", "cpu-2proc-fsdp"} <= names
    assert {"zero1", "zero2", "zero3", "zero3-offload"} <= {p.stem for p in JSONS}
    assert (DEEPSPEED_DIR / "README.md").is_file()  # JSON cannot explain itself


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_accelerate_config(path: Path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    text = path.read_text()
    assert text.startswith("#"), f"{path.name}: start with a comment saying what the config is for"
    cfg = load_config_from_file(str(path))  # what `accelerate launch --config_file` reads; refuses unknown keys
    assert isinstance(cfg, ClusterConfig)
    want = expected(path.stem)
    assert cfg.distributed_type == DistributedType[want["type"]]
    assert cfg.num_processes == want["procs"]
    assert cfg.num_machines == want["machines"]
    assert cfg.use_cpu is want["cpu"]

    if cfg.distributed_type == DistributedType.DEEPSPEED:
        assert "launch from the repo root" in text.lower()
        ds = cfg.deepspeed_config
        assert ds.get("deepspeed_config_file") == want["ds_json"]
        ds_file = REPO / ds["deepspeed_config_file"]  # relative to the repo root, where users launch
        assert ds_file.is_file(), ds_file
        load_json(ds_file)
        refused = [k for k in REFUSED_WITH_DS_FILE if k in ds]
        assert not refused, f"{path.name}: accelerate refuses {refused} next to a deepspeed_config_file"
        assert cfg.mixed_precision is None, (
            f"{path.name}: accelerate refuses mixed_precision next to a deepspeed_config_file "
            "(bf16/fp16 are \"auto\" in the JSON)")
    else:
        assert not cfg.deepspeed_config

    if cfg.distributed_type == DistributedType.FSDP:
        fsdp = cfg.fsdp_config
        assert fsdp["fsdp_version"] == 2
        assert fsdp["fsdp_reshard_after_forward"] is True  # FSDP2's full shard
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert fsdp["fsdp_state_dict_type"] in ("SHARDED_STATE_DICT", "FULL_STATE_DICT")
        # accelerate launch requires sync_module_states with ram-efficient loading (even for FSDP2).
        assert not fsdp.get("fsdp_cpu_ram_efficient_loading") or fsdp.get("fsdp_sync_module_states", True)
    else:
        assert not cfg.fsdp_config

    if not want["cpu"] and want["type"] != "DEEPSPEED":
        assert cfg.mixed_precision == "bf16"
    if want["machines"] > 1:
        assert cfg.main_process_ip and cfg.main_process_port and cfg.machine_rank == 0
        assert "--machine_rank" in text and "--main_process_ip" in text
        # torchrun on every node, not DeepSpeed's pdsh launcher (which wants a hostfile and ssh)
        assert cfg.deepspeed_config.get("deepspeed_multinode_launcher") == "standard"


def zero_stage_of(path: Path) -> int:
    m = re.match(r"zero([0-3])\b", path.stem)
    assert m, f"{path.name}: name a DeepSpeed config zeroN[-what].json"
    return int(m.group(1))


@pytest.mark.parametrize("path", JSONS, ids=lambda p: p.name)
def test_deepspeed_json_keeps_alignkit_rules(path: Path):
    cfg = load_json(path)
    for key in AUTO_KEYS:
        assert cfg.get(key, "auto") == "auto", f"{path.name}: {key} must be \"auto\" (alignkit fills it)"
    for key in ("optimizer", "scheduler"):
        assert key not in cfg, f"{path.name}: no {key} section (alignkit builds it from the stage's optim)"
    assert cfg.get("bf16") == {"enabled": "auto"}
    assert cfg.get("fp16", {}).get("enabled") == "auto"
    zero = cfg["zero_optimization"]
    assert zero["stage"] == zero_stage_of(path)
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
        for key in ZERO3_AUTO:
            assert zero.get(key, "auto") == "auto", f"{path.name}: {key} should stay \"auto\""
    if "offload" in path.stem:
        for key in ("offload_optimizer", "offload_param"):
            assert zero[key] == {"device": "cpu", "pin_memory": True}
    else:
        assert "offload_optimizer" not in zero and "offload_param" not in zero


@pytest.mark.skipif(find_spec("deepspeed") is None, reason="deepspeed is not installed")
@pytest.mark.parametrize("path", JSONS, ids=lambda p: p.name)
def test_deepspeed_plugin_reads_json(path: Path, monkeypatch):
    # A launch environment would feed the plugin; the file alone must decide here.
    import os

    for var in [v for v in os.environ if v.startswith("ACCELERATE_")]:
        monkeypatch.delenv(var)
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=str(path))
    assert plugin.zero_stage == zero_stage_of(path)
    assert plugin.hf_ds_config.is_zero3() == (plugin.zero_stage == 3)
    offload = "cpu" if "offload" in path.stem else "none"
    assert plugin.offload_optimizer_device == offload
    assert plugin.offload_param_device == offload
    if plugin.zero_stage == 3:
        assert plugin.zero3_save_16bit_model is True
