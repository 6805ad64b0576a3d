"""HuBERT / WavLM backbones of asr-ctc: front-end freezing (issue 14, item 1) and the taps of
both layer-norm variants (item 2), on tiny random models built from transformers configs and
saved locally (nothing is downloaded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke_json, sets

FIXTURE = Path(__file__).parent / "fixtures" / "librispeech" / "LibriSpeech" / "dev-clean-2"
FAMILIES = ["hubert", "wavlm"]


def tiny_config(family: str, stable: bool, **overrides):
    from transformers import HubertConfig, WavLMConfig

    config_cls = HubertConfig if family == "hubert" else WavLMConfig
    kwargs = {
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (16, 16),
        "conv_kernel": (10, 8),
        "conv_stride": (10, 8),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "do_stable_layer_norm": stable,
        "feat_extract_norm": "layer" if stable else "group",
    }
    return config_cls(**{**kwargs, **overrides})


def tiny_model(family: str, stable: bool, **overrides):
    from transformers import HubertModel, WavLMModel

    torch.manual_seed(0)
    return (HubertModel if family == "hubert" else WavLMModel)(tiny_config(family, stable, **overrides)).eval()


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny HuBERT and a tiny WavLM (post-LN, the Base variant), saved in HF format."""
    dirs = {}
    for family in FAMILIES:
        path = tmp_path_factory.mktemp(family)
        tiny_model(family, stable=False).save_pretrained(path)
        dirs[family] = path
    return dirs


@pytest.fixture(scope="module")
def fixture_dataset(tmp_path_factory) -> Path:
    """The three real LibriSpeech fixture utterances, prepared as one train split."""
    from skdcli.asr_ctc.data import prepare_dataset

    root = tmp_path_factory.mktemp("hfdata")
    shutil.copytree(FIXTURE, root / "mycorpus")  # not an official set name: a train pool
    prepare_dataset("librispeech", root / "mycorpus", root / "prepared", dev_fraction=0.0)
    return root / "prepared"


def hf_cfg(path: Path, **kd):
    from skdcli.asr_ctc.config import AsrCtcConfig
    from skdcli.engine.config import validate_config

    cfg = AsrCtcConfig()
    cfg.model.encoder, cfg.model.pretrained, cfg.data.feature = "hf", str(path), "waveform"
    cfg.model.student_layer = 2
    validate_config(cfg)
    return cfg


# -- item 1: the convolutional front-end is frozen on every supported encoder --------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_front_end_is_frozen(family: str, hf_dirs: dict[str, Path]) -> None:
    from skdcli.asr_ctc.model import CTCSelfKDModel

    model = CTCSelfKDModel(hf_cfg(hf_dirs[family]), vocab_size=29)
    front = model.encoder.model.feature_extractor
    assert [p.requires_grad for p in front.parameters()] and not any(p.requires_grad for p in front.parameters())
    assert front._requires_grad is False
    # the rest stays trainable, including the feature projection after the convolutions
    assert all(p.requires_grad for p in model.encoder.model.feature_projection.parameters())
    assert all(p.requires_grad for p in model.encoder.model.encoder.parameters())
    unfrozen = hf_cfg(hf_dirs[family])
    unfrozen.model.freeze_feature_encoder = False
    assert all(p.requires_grad for p in CTCSelfKDModel(unfrozen, 29).encoder.model.feature_extractor.parameters())


def test_freezing_a_model_without_a_front_end_is_an_error() -> None:
    from skdcli.asr_ctc.model import freeze_feature_encoder
    from skdcli.engine.errors import SkdError

    with pytest.raises(SkdError, match="no convolutional feature encoder"):
        freeze_feature_encoder(torch.nn.Linear(2, 2), "some/dir")


@pytest.mark.parametrize("family", FAMILIES)
def test_front_end_weights_unchanged_after_training_steps(
    family: str, hf_dirs: dict[str, Path], fixture_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    invoke_json(
        "asr-ctc",
        "train",
        "--data",
        fixture_dataset,
        "--run-dir",
        run_dir,
        "--max-steps",
        "2",
        *sets(
            "model.encoder=hf",
            "data.feature=waveform",
            f"model.pretrained={hf_dirs[family]}",
            "model.student_layer=2",
            "train.batch_size=2",
            "train.warmup_steps=0",
            "train.eval_every=0",
            "train.lr=1e-2",
            "train.weight_decay=0.1",
        ),
    )
    before = load_file(hf_dirs[family] / "model.safetensors")
    after = load_file(run_dir / "checkpoints" / "step_00000002" / "model.safetensors")
    prefix = "encoder.model."
    front = [k for k in before if k.startswith("feature_extractor.")]
    assert front
    for key in front:
        assert torch.equal(after[prefix + key], before[key]), key
    # the step did train the rest of the encoder
    assert not torch.equal(
        after[prefix + "feature_projection.projection.weight"], before["feature_projection.projection.weight"]
    )


# -- item 2: the teacher reads what the model's own CTC head reads ------------------------------------


@pytest.mark.parametrize("stable", [False, True], ids=["post-ln", "stable-ln"])
@pytest.mark.parametrize("family", FAMILIES)
def test_taps_equal_output_hidden_states(family: str, stable: bool) -> None:
    from skdcli.asr_ctc.model import HFEncoder

    model = tiny_model(family, stable)
    wave, lengths = torch.randn(2, 6000), torch.tensor([6000, 4500])
    mask = (torch.arange(6000)[None] < lengths[:, None]).long()
    last_layer: list[torch.Tensor] = []
    model.encoder.layers[-1].register_forward_hook(
        lambda m, i, out: last_layer.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        ref = model(wave, attention_mask=mask, output_hidden_states=True)
        encoder = HFEncoder(model)
        hidden, _ = encoder(wave, lengths, (0, 1, 2, 3))
    assert len(ref.hidden_states) == 4
    for i in range(3):  # the student may tap any layer l < L: hidden_states[l], as the reference code
        torch.testing.assert_close(hidden[i], ref.hidden_states[i], rtol=0, atol=0)
    # The teacher tap is what HubertForCTC / WavLMForCTC feed their lm_head: last_hidden_state.
    # transformers 4.x also returned it as hidden_states[-1] (the reference code's teacher tap);
    # 5.x records hidden_states with layer hooks, so for stable-LN models its [-1] is the raw
    # output of layer L, before the final LayerNorm.
    torch.testing.assert_close(hidden[3], ref.last_hidden_state, rtol=0, atol=0)
    if not stable:
        torch.testing.assert_close(hidden[3], ref.hidden_states[3], rtol=0, atol=0)
    # stable-LN: the final LayerNorm really changes it (the tap before the fix was layer 3's own output)
    assert ((hidden[3] - last_layer[-1]).abs().max() > 0.1) == stable


@pytest.mark.parametrize("family", FAMILIES)
def test_stable_ln_truncated_student_reads_before_the_final_norm(family: str) -> None:
    """The exported student sub-model (layers 1..l) reads hidden_states[l], not a normalised one."""
    from skdcli.asr_ctc.model import HFEncoder

    model = tiny_model(family, stable=True)
    wave, lengths = torch.randn(1, 5000), torch.tensor([5000])
    with torch.no_grad():
        ref = model(wave, attention_mask=torch.ones(1, 5000, dtype=torch.long), output_hidden_states=True)
        full = HFEncoder(model)
        student = full.truncated(2)
        teacher = full.truncated(3)
        assert not student.final_norm and teacher.final_norm
        torch.testing.assert_close(student(wave, lengths, (2,))[0][2], ref.hidden_states[2])
        torch.testing.assert_close(teacher(wave, lengths, (3,))[0][3], ref.last_hidden_state)
